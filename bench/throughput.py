"""Throughput benchmark: requests/s of the PRM and DNR training steps, in memory and through
Delta -> Ray Data -> Ray Train, the Train workers' peak memory, and the embedding-table cost.

Three step kinds, all at the sizes of ``jobs/configs/local.yaml`` (d=64, 1 layer, 2^16 item
buckets, batch 128, L=50, history 50):

* ``prm``: ``model.score_mode=concat`` with ``dnr.enabled=false``: plain BCE (the PRM baseline).
* ``dnr_heuristic``: ``denoise``, stage 1 (beta noise): one forward over the batch doubled.
* ``dnr_adversarial``: ``denoise`` with ``dnr.lambda_e=0``: stage 2, the reranker half-step
  plus the generator half-step (a second forward and a backward through the frozen reranker).

Measured in one run, so that the ratios see the same machine load:

1. ``in-memory``: ``train_step`` on pre-collated ``RerankBatch``es in this process, no Ray,
   one thread (as a Train worker with ``train.cpus_per_worker=1`` runs); the modes take turns
   step by step, once before and once after the pipeline runs.
2. ``pipeline``: a ``TorchTrainer`` with 1, then 2 workers reads a Delta window through
   ``Window.validated``, and each worker runs the training loop's own pieces
   (``dnr.training.loop``: ``distributed_parts``, ``device_batches``, ``take_step``: the
   sharded item table, DDP, the collate in Ray Data's prefetch threads, the step). One pass
   serves every mode in turn: warm-up steps, then timed blocks of steps from the pipeline, each
   followed by the same batches replayed from memory in the same worker (the control: same
   process, same load, same DDP all-reduce). It leaves out what ``run_daily`` adds around the
   loop (the duplicate-id and quarantine passes, checkpoints, TensorBoard, metric all-reduce);
   ``--daily MODE`` also runs ``run_daily`` itself and takes the steady
   ``train/requests_per_s`` from its TensorBoard events (about 3 minutes per call on a loaded
   2-core VM, hence not by default).
3. ``buckets``: in-memory DNR step time with 2^16 and 2^22 item buckets at d=64 (local.yaml's
   width), unsharded: the table's gradient is dense and its (plain) optimizer visits every
   row. The sharded training path, where only the touched rows are updated, is measured by
   ``bench/embeddings.py``.

The Train workers' peak memory over windows of 1 and 4 days is ``bench/memory.py``.

    python bench/throughput.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from dnr.config import JobConfig, config_from_dict, config_to_dict, load_config
from dnr.data.collate import collate
from dnr.datasets.synth import make_requests
from dnr.datasets.synth_world import WorldConfig
from dnr.data.window import Window
from dnr.schemas import REQUEST_LOGS as RL
from dnr.storage import Lake
from dnr.training.loop import take_step
from dnr.training.step import build_train_parts

LOCAL_CONFIG = "jobs/configs/local.yaml"
DAY0 = dt.date(2026, 1, 1)
MODES = {
    "prm": ["model.score_mode=concat", "dnr.enabled=false"],
    "dnr_heuristic": ["model.score_mode=denoise", "dnr.lambda_e=1000000000"],
    "dnr_adversarial": ["model.score_mode=denoise", "dnr.lambda_e=0"],
    # the cheaper-step option (off by default): a synthetic copy for half of each batch
    "dnr_heuristic_half": ["model.score_mode=denoise", "dnr.lambda_e=1000000000", "dnr.synthetic_fraction=0.5"],
    "dnr_adversarial_half": ["model.score_mode=denoise", "dnr.lambda_e=0", "dnr.synthetic_fraction=0.5"],
    # the same option at 0.3 of each batch
    "dnr_heuristic_f30": ["model.score_mode=denoise", "dnr.lambda_e=1000000000", "dnr.synthetic_fraction=0.3"],
    "dnr_adversarial_f30": ["model.score_mode=denoise", "dnr.lambda_e=0", "dnr.synthetic_fraction=0.3"],
}
PIPELINE_MODES = ("prm", "dnr_heuristic", "dnr_adversarial")
"""Modes also timed through the pipeline (the ``_half`` and ``_f30`` modes only in memory: the 2-worker pass
over the 4-day window has batches for three modes)."""
BUCKET_MODES = ("dnr_adversarial",)
"""Modes of the bucket comparison: the item table's update is the same in every mode (one
reranker AdamW step), and a 2^22 step takes seconds, so one mode is enough."""
PIPELINE_TARGET = 0.9
"""Target: the pipeline delivers >= 0.9 of the in-memory step rate."""
DNR_TARGETS = {"dnr_heuristic": 1.4, "dnr_adversarial": 1.9}
"""Targets of issue 12: a DNR step costs at most this many PRM steps (in memory, median), for
each stage; a ``_half`` or ``_f30`` mode has its stage's target."""
DAILY_STEPS, DAILY_LOG_EVERY = 16, 4
"""run_daily cross-check: 4 log intervals of requests/s; the first holds the start-up."""


def mode_config(mode: str, extra: Sequence[str] = ()) -> JobConfig:
    """local.yaml with the mode's overrides, then ``extra``."""
    return load_config(LOCAL_CONFIG, MODES[mode] + list(extra))


def _shifted(table: pa.Table, days: int) -> pa.Table:
    """The same requests ``days`` later (event_time and ds), so that they validate as that day."""
    time_field, ds_field = table.schema.field(RL.col.event_time), table.schema.field(RL.col.ds)
    moved = pc.add(table[RL.col.event_time], pa.scalar(dt.timedelta(days=days), pa.duration("us")))
    table = table.set_column(table.schema.get_field_index(time_field.name), time_field, moved)
    ds = pc.strftime(moved, format="%Y-%m-%d")
    return table.set_column(table.schema.get_field_index(ds_field.name), ds_field, ds)


def make_lake(root: str, args: argparse.Namespace) -> tuple[Lake, list[pa.Table]]:
    """Days 0-3: ``requests_per_day`` generated requests each, written as ``files_per_day``
    Parquet files (a window streams as several blocks per day). Returns the lake and the days' rows."""
    lake, world = Lake(root), WorldConfig(seed=0)
    per_file, days = args.requests_per_day // args.files_per_day, []
    for d in range(4):
        tables = [make_requests(world, DAY0 + dt.timedelta(days=d), np.arange(f * per_file, (f + 1) * per_file))
                  for f in range(args.files_per_day)]
        for table in tables:
            write_day(lake, table)
        days.append(pa.concat_tables(tables))
    return lake, days


def write_day(lake: Lake, table: pa.Table) -> None:
    from deltalake import write_deltalake

    write_deltalake(lake.table_uri("request_logs"), table, partition_by=["ds"], mode="append")


# ---- 1 and 3: in memory, no Ray -------------------------------------------------------------

def _batches(table: pa.Table, cfg: JobConfig, count: int) -> list:
    size = cfg.data.batch_size
    return [collate(table.slice(i * size, size), cfg.data) for i in range(count)]


def _fresh_parts(cfg: JobConfig):
    torch.manual_seed(0)
    return build_train_parts(cfg.model, cfg.data, cfg.dnr, cfg.optim)


def _step(parts, batch, cfg: JobConfig, global_step: int) -> None:
    take_step(batch, parts, global_step, cfg)  # the training loop's own step


def in_memory(cfgs: dict[str, JobConfig], table: pa.Table, steps: int) -> dict[str, list[float]]:
    """Seconds of each of ``steps`` steps per mode on pre-collated batches; the modes take turns
    step by step, so that a change of the machine's load hits every mode alike."""
    batches = {name: _batches(table, cfg, steps) for name, cfg in cfgs.items()}
    parts = {name: _fresh_parts(cfg) for name, cfg in cfgs.items()}
    for name, cfg in cfgs.items():
        _step(parts[name], batches[name][0], cfg, 0)  # warm-up: AdamW allocates its state here
    seconds = {name: [] for name in cfgs}
    for i in range(steps):
        for name, cfg in cfgs.items():
            start = time.perf_counter()
            _step(parts[name], batches[name][i], cfg, i + 1)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def collate_seconds(table: pa.Table, cfg: JobConfig, count: int) -> float:
    """Seconds per batch of ``collate`` (what the pipeline adds per step, in a worker thread)."""
    start = time.perf_counter()
    _batches(table, cfg, count)
    return (time.perf_counter() - start) / count


def _mem_available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def bucket_cost(table: pa.Table, big_log2: int, steps: int) -> dict:
    """Seconds per step with the local item table (2^16) and with 2^big_log2 buckets, per mode,
    the two sizes alternating step by step."""
    out = {}
    for mode in BUCKET_MODES:
        small = mode_config(mode)
        big = mode_config(mode, [f"data.num_buckets={2 ** big_log2}"])
        params = big.data.num_buckets * big.model.d_model
        # weights, dense gradient, two AdamW moments, and foreach temporaries of the same size
        need_gib = 5 * 4 * params / 2**30
        if _mem_available_gib() < need_gib + 2:
            out[mode] = {"skipped": f"needs ~{need_gib:.1f} GiB, {_mem_available_gib():.1f} GiB available"}
            continue
        cfgs = {"small": small, "big": big}
        batches = {k: _batches(table, c, steps + 1) for k, c in cfgs.items()}
        parts = {k: _fresh_parts(c) for k, c in cfgs.items()}
        seconds = dict.fromkeys(cfgs, 0.0)
        for i in range(steps + 1):
            for k, cfg in cfgs.items():
                start = time.perf_counter()
                _step(parts[k], batches[k][i], cfg, i)
                seconds[k] += (time.perf_counter() - start) if i else 0.0  # step 0 is warm-up
        out[mode] = {"buckets_small": small.data.num_buckets, "buckets_big": big.data.num_buckets,
                     "d_model": big.model.d_model, "item_table_params_big": params,
                     "step_s_small": seconds["small"] / steps, "step_s_big": seconds["big"] / steps}
        del parts, batches
    return out


# ---- 2: the Ray Train workers, running the training loop's pieces ----------------------------

def _speed_passes(shard, cfgs: dict[str, JobConfig], device, warmup: int, steps: int, block: int) -> dict:
    """Every mode from one pass over the shard (one Ray Data execution), one after the other:
    ``warmup`` untimed steps, then ``steps`` timed steps in blocks of ``block`` steps from the
    pipeline, each followed by the same ``block`` batches again from memory: the control, in the
    same process, under the same load and DDP, alternating so that a change of load hits both."""
    from dnr.training.loop import device_batches, distributed_parts, take_step

    iterator = device_batches(shard, cfgs["prm"].data, device)
    out = {}
    for name, cfg in cfgs.items():
        torch.manual_seed(0)
        parts = distributed_parts(cfg, device)
        for i in range(warmup):  # the first mode's also absorbs the pipeline's start
            take_step(next(iterator), parts, i, cfg)
        pipeline_s = replay_s = 0.0
        requests, step = 0, warmup
        for _ in range(steps // block):
            kept, start = [], time.perf_counter()
            for _ in range(block):
                kept.append(next(iterator))
                take_step(kept[-1], parts, step, cfg)
                step += 1
            pipeline_s += time.perf_counter() - start
            start = time.perf_counter()
            for batch in kept:
                take_step(batch, parts, step, cfg)
                step += 1
            replay_s += time.perf_counter() - start
            requests += sum(b.num_requests for b in kept)
        out[name] = {"steps": steps // block * block, "requests": requests,
                     "pipeline_s": pipeline_s, "replay_s": replay_s}
    iterator.close()  # ends this epoch of the split: Ray Data stops reading ahead
    return out


def worker_loop(loop_cfg: dict) -> None:
    """Ray Train worker: a speed pass per mode; writes ``rank<r>.json`` to ``loop_cfg['out']``."""
    import ray.train
    import ray.train.torch

    rank = ray.train.get_context().get_world_rank()
    torch.set_num_threads(1)  # as train_loop_per_worker does with train.cpus_per_worker=1
    speed = _speed_passes(ray.train.get_dataset_shard("train4"),
                          {name: config_from_dict(d) for name, d in loop_cfg["modes"].items()},
                          ray.train.torch.get_device(), loop_cfg["warmup"], loop_cfg["steps"], loop_cfg["block"])
    Path(loop_cfg["out"], f"rank{rank}.json").write_text(json.dumps({"rank": rank, "speed": speed}))


def pipeline(lake: Lake, workers: int, out: Path, args: argparse.Namespace) -> list[dict]:
    """One ``TorchTrainer`` run of :func:`worker_loop`; the per-rank results."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    data_cfg = mode_config("prm").data
    end = (DAY0 + dt.timedelta(days=3)).isoformat()

    out.mkdir(parents=True)
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"modes": {m: config_to_dict(mode_config(m)) for m in PIPELINE_MODES},
                           "out": str(out), "warmup": args.warmup, "steps": args.steps, "block": args.block},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=f"throughput-w{workers}", storage_path=str(out / "runs")),
        datasets={"train4": Window.open(lake, DAY0.isoformat(), end).validated(data_cfg)},
    )
    trainer.fit()
    return [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]


def summarise_pipeline(ranks: list[dict]) -> dict:
    """Global requests/s per mode: all ranks' requests over the slowest rank's seconds."""
    speed = {}
    for mode in PIPELINE_MODES:
        passes = [r["speed"][mode] for r in ranks]
        requests = sum(p["requests"] for p in passes)
        speed[mode] = {"requests_per_s": requests / max(p["pipeline_s"] for p in passes),
                       "replay_requests_per_s": requests / max(p["replay_s"] for p in passes),
                       "timed_steps_per_worker": passes[0]["steps"]}
    return {"workers": len(ranks), "speed": speed}


def daily_rate(lake: Lake, mode: str) -> dict:
    """``run_daily`` on the 1-day window, 1 worker: steady ``train/requests_per_s`` (harmonic mean
    of the log intervals after the first, which holds the start-up) and the call's wall time."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dnr.daily.run import run_daily

    cfg = mode_config(mode, ["train.num_workers=1", f"train.max_steps={DAILY_STEPS}",
                             f"train.log_every_steps={DAILY_LOG_EVERY}", f"train.model_name=bench-{mode}"])
    started = time.perf_counter()
    result = run_daily(lake, cfg, ds=(DAY0 + dt.timedelta(days=1)).isoformat(), verbose=False)
    wall = time.perf_counter() - started
    rates = [e.value for e in EventAccumulator(result.tensorboard_uri).Reload().Scalars("train/requests_per_s")]
    steady = rates[1:]
    return {"requests_per_s": len(steady) / sum(1 / r for r in steady), "intervals": rates,
            "steps": result.global_step, "wall_s": wall}


# ---- report ---------------------------------------------------------------------------------

def summarise_in_memory(start: dict[str, list[float]], end: dict[str, list[float]]) -> dict:
    """Mean and median seconds per step over both brackets; the end/start speed ratio shows how
    much the machine's load moved while the pipeline ran."""
    pooled = {m: start[m] + end[m] for m in MODES}
    return {"step_s_mean": {m: float(np.mean(v)) for m, v in pooled.items()},
            "step_s_median": {m: float(np.median(v)) for m, v in pooled.items()},
            "speed_end_vs_start": {m: float(np.mean(start[m]) / np.mean(end[m])) for m in MODES},
            "step_s_start": start, "step_s_end": end}


def ratios(result: dict) -> dict:
    mean, median = result["in_memory"]["step_s_mean"], result["in_memory"]["step_s_median"]
    out = {"dnr_vs_prm_step_in_memory_median": {m: median[m] / median["prm"] for m in MODES if m != "prm"},
           "dnr_vs_prm_step_in_memory_mean": {m: mean[m] / mean["prm"] for m in MODES if m != "prm"}}
    for key in ("pipeline_w1", "pipeline_w2"):
        speed, n = result[key]["speed"], result[key]["workers"]
        out[key] = {m: {
            # the same batches from memory, right after, in the same worker: same load, same DDP
            "vs_replay_in_worker": speed[m]["requests_per_s"] / speed[m]["replay_requests_per_s"],
            # per worker, against one in-memory thread in the driver (load may differ: see brackets)
            "vs_in_memory_driver": speed[m]["requests_per_s"] / n * mean[m] / result["batch_size"],
            "dnr_vs_prm_step": speed["prm"]["requests_per_s"] / speed[m]["requests_per_s"],
        } for m in PIPELINE_MODES}
    out["w2_vs_w1"] = {m: result["pipeline_w2"]["speed"][m]["requests_per_s"]
                       / result["pipeline_w1"]["speed"][m]["requests_per_s"] for m in PIPELINE_MODES}
    out["buckets_big_vs_small"] = {m: v["step_s_big"] / v["step_s_small"]
                                   for m, v in result["buckets"].items() if "step_s_big" in v}
    return out


def _dnr_target(mode: str) -> float:
    return DNR_TARGETS[mode.removesuffix("_half").removesuffix("_f30")]


def verdicts(result: dict) -> dict:
    """The issue's targets, each True where met."""
    r = result["ratios"]
    return {
        f"pipeline_ge_{PIPELINE_TARGET}_of_in_memory (in-worker replay)": {
            key: {m: r[key][m]["vs_replay_in_worker"] >= PIPELINE_TARGET for m in PIPELINE_MODES}
            for key in ("pipeline_w1", "pipeline_w2")},
        "dnr_step_within_target_x_prm (in memory, median)": {
            m: {"ratio": round(v, 3), "target": _dnr_target(m), "met": v <= _dnr_target(m)}
            for m, v in r["dnr_vs_prm_step_in_memory_median"].items()},
    }


def print_report(result: dict) -> None:
    batch, inmem, r = result["batch_size"], result["in_memory"], result["ratios"]
    print(f"\n{'mode':<21} {'in-mem':>7} {'end/st':>6} | {'pipe w1':>7} {'/replay':>7} {'/in-mem':>7} | "
          f"{'pipe w2':>7} {'/replay':>7} {'/in-mem':>7} | {'w2/w1':>5}   (requests/s)")
    for m in MODES:
        if m not in PIPELINE_MODES:
            print(f"{m:<21} {batch / inmem['step_s_mean'][m]:7,.0f} {inmem['speed_end_vs_start'][m]:6.2f} | (in memory only)")
            continue
        w1, w2 = result["pipeline_w1"]["speed"][m], result["pipeline_w2"]["speed"][m]
        print(f"{m:<21} {batch / inmem['step_s_mean'][m]:7,.0f} {inmem['speed_end_vs_start'][m]:6.2f} | "
              f"{w1['requests_per_s']:7,.0f} {r['pipeline_w1'][m]['vs_replay_in_worker']:7.2f} "
              f"{r['pipeline_w1'][m]['vs_in_memory_driver']:7.2f} | {w2['requests_per_s']:7,.0f} "
              f"{r['pipeline_w2'][m]['vs_replay_in_worker']:7.2f} {r['pipeline_w2'][m]['vs_in_memory_driver']:7.2f} | "
              f"{r['w2_vs_w1'][m]:5.2f}")
    print("DNR/PRM step cost, in memory (median step): "
          + ", ".join(f"{m} {v:.2f}x" for m, v in r["dnr_vs_prm_step_in_memory_median"].items())
          + "; pipeline w1: " + ", ".join(f"{m} {r['pipeline_w1'][m]['dnr_vs_prm_step']:.2f}x"
                                         for m in PIPELINE_MODES if m != "prm"))
    print(f"collate: {result['collate_ms_per_batch']:.1f} ms per batch of {batch}")
    for m, v in result["buckets"].items():
        if "skipped" in v:
            print(f"buckets {m}: skipped, {v['skipped']}")
        else:
            print(f"buckets {m}: {v['step_s_small'] * 1e3:.0f} ms/step at 2^{v['buckets_small'].bit_length() - 1}, "
                  f"{v['step_s_big'] * 1e3:.0f} ms/step at 2^{v['buckets_big'].bit_length() - 1} "
                  f"(d={v['d_model']}): {v['step_s_big'] / v['step_s_small']:.1f}x")
    for m, v in result.get("daily", {}).items():
        print(f"run_daily {m} (1 worker): {v['requests_per_s']:,.0f} req/s steady, call {v['wall_s']:.0f}s")
    for target, met in result["verdicts"].items():
        print(f"target {target}: {json.dumps(met)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests-per-day", type=int, default=4096, help="days 0-3 (training passes)")
    parser.add_argument("--files-per-day", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per mode and measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed pipeline steps per mode")
    parser.add_argument("--block", type=int, default=4, help="pipeline steps between two replays")
    parser.add_argument("--big-buckets-log2", type=int, default=22)
    parser.add_argument("--daily", nargs="*", default=[], choices=list(MODES),
                        help="also time run_daily (1 worker) for these modes (~3 min each on 2 cores)")
    parser.add_argument("--out", default="bench/results/throughput.json")
    args = parser.parse_args()

    import ray
    from ray import cloudpickle
    from ray.data import DataContext

    if __name__ != "__main__":  # imported (e.g. python -m): ship the worker loop by value
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started, load_start = time.perf_counter(), os.getloadavg()
    phases: dict[str, float] = {}

    def phase_done(name: str, since: float) -> float:
        now = time.perf_counter()
        phases[name] = now - since
        print(f"  [{name}: {phases[name]:.0f}s]")
        return now

    torch.set_num_threads(1)  # the in-memory loop runs like one Train worker
    cfgs = {m: mode_config(m) for m in MODES}
    batch = cfgs["prm"].data.batch_size
    result = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs, no GPU, "
                         f"Python {platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}",
              "config": LOCAL_CONFIG, "batch_size": batch, "args": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        lake, days = make_lake(tmp + "/lake", args)
        day0 = days[0]
        print(f"lake: 4 days x {args.requests_per_day:,} requests ({args.files_per_day} files/day); "
              f"batch {batch}, torch threads 1")
        t = phase_done("lake", started)

        start_s = in_memory(cfgs, day0, args.steps)
        result["collate_ms_per_batch"] = collate_seconds(day0, cfgs["prm"], args.steps) * 1e3
        print("in-memory (start): " + ", ".join(f"{m} {batch / np.mean(s):,.0f} req/s" for m, s in start_s.items()))
        t = phase_done("in_memory_start", t)

        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
        DataContext.get_current().enable_progress_bars = False
        t = phase_done("ray_init", t)
        try:
            for workers in (1, 2):
                ranks = pipeline(lake, workers, Path(tmp, f"w{workers}"), args)
                result[f"pipeline_w{workers}"] = summarise_pipeline(ranks)
                speed = result[f"pipeline_w{workers}"]["speed"]
                print(f"pipeline ({workers} worker(s)): "
                      + ", ".join(f"{m} {v['requests_per_s']:,.0f} req/s" for m, v in speed.items()))
                t = phase_done(f"pipeline_w{workers}", t)
            if args.daily:
                result["daily"] = {m: daily_rate(lake, m) for m in args.daily}
                t = phase_done("daily", t)
        finally:
            ray.shutdown()

        end_s = in_memory(cfgs, day0, args.steps)
        print("in-memory (end):   " + ", ".join(f"{m} {batch / np.mean(s):,.0f} req/s" for m, s in end_s.items()))
        result["in_memory"] = summarise_in_memory(start_s, end_s)
        t = phase_done("in_memory_end", t)
        result["buckets"] = bucket_cost(day0, args.big_buckets_log2, steps=2)
        phase_done("buckets", t)

    result["ratios"] = ratios(result)
    result["verdicts"] = verdicts(result)
    result["load_average_1m"] = {"start": load_start[0], "end": os.getloadavg()[0]}
    result["phase_seconds"] = phases
    result["seconds"] = time.perf_counter() - started
    print_report(result)
    print(f"load average (1 min) {load_start[0]:.1f} -> {os.getloadavg()[0]:.1f}; total {result['seconds']:.0f}s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
