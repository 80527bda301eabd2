"""Memory benchmark: the Ray Train workers' peak memory over a 1-day and a 4-day window.

Streaming means a worker's memory does not grow with the window. At the sizes of
``jobs/configs/local.yaml``, in a ``TorchTrainer`` with 1, then 2 workers, each worker
samples its ``/proc/self/status`` (peak RSS ``VmHWM``, ``RssAnon``, ``RssShmem``; Linux only)
after every batch of four passes, each a fresh Ray Data execution:

* ``stream1``, ``stream4``: iterating and collating the whole 1-day, then 4-day window of large
  days, no step (the data path alone, where streaming or not is decided), while the process
  holds no model, so that a step's own peak hides nothing;
* ``train1``, ``train4``: training PRM over a 1-day and a 4-day window of small days.

The batches come from the training loop's own pieces (``dnr.training.loop.device_batches``,
``distributed_parts``, ``take_step``). The driver samples the node's object-store usage over each
pass (the shared pages a worker maps count in its RSS).

    python bench/memory.py

Writes ``bench/results/memory.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/memory.py` from anywhere

from bench import throughput  # noqa: E402
from bench.throughput import DAY0, make_lake, mode_config, write_day  # noqa: E402
from dnr.config import config_from_dict, config_to_dict  # noqa: E402
from dnr.datasets.synth import make_requests  # noqa: E402
from dnr.datasets.synth_world import WorldConfig  # noqa: E402
from dnr.data.window import Window  # noqa: E402
from dnr.storage import Lake  # noqa: E402

MODE = "prm"
"""The cheapest step: the window's size is what is varied."""
STATUS_KEYS = ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem")
FLAT_SHARE = 0.25
"""Peak RSS is flat if the 4-day window adds at most this share of its 3 extra days' Arrow bytes."""


def add_stream_days(lake: Lake, args: argparse.Namespace) -> float:
    """Days 4-7: ``stream_file_requests`` generated requests written ``stream_files_per_day``
    times per day, moved to each day (generating is the slow part; memory does not depend on the
    values). Returns MB of Arrow per day."""
    stream = make_requests(WorldConfig(seed=0), DAY0 + dt.timedelta(days=4), np.arange(args.stream_file_requests))
    for d in range(4):
        for _ in range(args.stream_files_per_day):
            write_day(lake, throughput._shifted(stream, d))
    return args.stream_files_per_day * stream.nbytes / 2**20


def _proc_status_mb() -> dict[str, float]:
    """Memory lines of /proc/self/status in MB (peak RSS ``VmHWM`` is ru_maxrss)."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in STATUS_KEYS:
            values[key] = int(rest.split()[0]) / 1024
    return values


def _memory_pass(batches, train=None) -> dict:
    """Iterate ``batches``, calling ``train(batch, index)`` on each when given; the max of each
    /proc/self/status line sampled after every batch."""
    peak = low = _proc_status_mb()
    count, requests, started = 0, 0, time.time()
    for batch in batches:
        if train is not None:
            train(batch, count)
        count, requests = count + 1, requests + batch.num_requests
        now = _proc_status_mb()
        peak = {k: max(v, peak[k]) for k, v in now.items()}
        low = {k: min(v, low[k]) for k, v in now.items()}
    return {"batches": count, "requests": requests, **{f"peak_{k}_mb": v for k, v in peak.items()},
            "rss_swing_mb": peak["VmRSS"] - low["VmRSS"], "time": [started, time.time()]}


def worker_loop(loop_cfg: dict) -> None:
    """Ray Train worker: the four passes; writes ``rank<r>.json`` to ``loop_cfg['out']``."""
    import ray.train
    import ray.train.torch

    from dnr.training.loop import device_batches, distributed_parts, take_step

    rank, device = ray.train.get_context().get_world_rank(), ray.train.torch.get_device()
    torch.set_num_threads(1)  # as train_loop_per_worker does with train.cpus_per_worker=1
    memory = {"start": {f"peak_{k}_mb": v for k, v in _proc_status_mb().items()}}
    cfg = config_from_dict(loop_cfg["config"])
    for window in ("stream1", "stream4"):
        memory[window] = _memory_pass(device_batches(ray.train.get_dataset_shard(window), cfg.data, device))
    torch.manual_seed(0)
    parts, offset = distributed_parts(cfg, device), 0
    for window in ("train1", "train4"):
        memory[window] = _memory_pass(device_batches(ray.train.get_dataset_shard(window), cfg.data, device),
                                      lambda batch, i: take_step(batch, parts, offset + i, cfg))
        offset += memory[window]["batches"]
    Path(loop_cfg["out"], f"rank{rank}.json").write_text(json.dumps({"rank": rank, "memory": memory}))


class ObjectStoreSampler:
    """Samples the node's object-store (plasma) usage every ``period`` s from a driver thread,
    so a worker's memory pass can be matched with the store's peak over its time span.
    Uses ``memory_summary`` (what ``ray memory`` prints): no public API reports it."""

    def __init__(self, period: float = 0.25):
        import ray

        self.address, self.period = ray.get_runtime_context().gcs_address, period
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from ray._private.internal_api import memory_summary

        while not self._stop.wait(self.period):
            text = memory_summary(address=self.address, stats_only=True)
            used = re.search(r"Plasma memory usage (\d+) MiB", text)
            if used:
                self.samples.append((time.time(), float(used.group(1))))

    def __enter__(self) -> ObjectStoreSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peak_mib(self, span: list[float]) -> float | None:
        inside = [mib for t, mib in self.samples if span[0] <= t <= span[1]]
        return max(inside) if inside else None


def run_workers(lake: Lake, workers: int, out: Path) -> list[dict]:
    """One ``TorchTrainer`` run of :func:`worker_loop`; the per-rank results."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cfg = mode_config(MODE)

    def window(first: int, days: int):
        start, end = DAY0 + dt.timedelta(days=first), DAY0 + dt.timedelta(days=first + days - 1)
        return Window.open(lake, start.isoformat(), end.isoformat()).validated(cfg.data)

    out.mkdir(parents=True)
    trainer = TorchTrainer(
        worker_loop, train_loop_config={"config": config_to_dict(cfg), "out": str(out)},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=f"memory-w{workers}", storage_path=str(out / "runs")),
        datasets={"train1": window(0, 1), "train4": window(0, 4), "stream1": window(4, 1), "stream4": window(4, 4)},
    )
    with ObjectStoreSampler() as store:
        trainer.fit()
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
    for rank in ranks:
        for mem in rank["memory"].values():
            if "time" in mem:
                mem["object_store_peak_mib"] = store.peak_mib(mem["time"])
    return ranks


def growth(result: dict) -> dict:
    """Peak 4-day minus 1-day MB per rank, for each /proc line and pass kind."""
    return {line: {key: {kind: [r["memory"][f"{kind}4"][f"peak_{line}_mb"] - r["memory"][f"{kind}1"][f"peak_{line}_mb"]
                                for r in result[key]] for kind in ("stream", "train")}
                   for key in ("workers_1", "workers_2")}
            for line in ("VmHWM", "RssAnon", "RssShmem")}


def verdict(result: dict) -> dict:
    """Flat: the data path alone grows by at most FLAT_SHARE of the extra days' Arrow MB per worker."""
    window, out = result["window_mb"], {}
    for key, workers in (("workers_1", 1), ("workers_2", 2)):
        extra = (window["stream4"] - window["stream1"]) / workers
        out[key] = all(g <= FLAT_SHARE * extra for g in result["growth_4_vs_1_day_mb"]["VmHWM"][key]["stream"])
    return {f"peak_rss_flat (4-day growth <= {FLAT_SHARE} x the 3 extra days' Arrow MB per worker)": out}


def print_report(result: dict) -> None:
    window = result["window_mb"]
    for key in ("workers_1", "workers_2"):
        for rank in result[key]:
            mem = rank["memory"]
            for kind, what in (("stream", "data path alone"), ("train", "training PRM")):
                one, four = mem[f"{kind}1"], mem[f"{kind}4"]
                print(f"peak RSS {key} rank {rank['rank']}, {what}: {one['peak_VmHWM_mb']:.0f} MB after 1 day "
                      f"({one['requests']:,} requests, window {window[f'{kind}1']:.0f} MB), "
                      f"{four['peak_VmHWM_mb']:.0f} MB after 4 days ({four['requests']:,}, "
                      f"{window[f'{kind}4']:.0f} MB); RssAnon {one['peak_RssAnon_mb']:.0f} -> "
                      f"{four['peak_RssAnon_mb']:.0f}, RssShmem {one['peak_RssShmem_mb']:.0f} -> "
                      f"{four['peak_RssShmem_mb']:.0f}, object store peak {one['object_store_peak_mib']} -> "
                      f"{four['object_store_peak_mib']} MiB")
    for target, met in result["verdict"].items():
        print(f"target {target}: {json.dumps(met)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests-per-day", type=int, default=4096, help="days 0-3 (training passes)")
    parser.add_argument("--files-per-day", type=int, default=4)
    parser.add_argument("--stream-file-requests", type=int, default=8192, help="days 4-7 (data-path passes)")
    parser.add_argument("--stream-files-per-day", type=int, default=2)
    parser.add_argument("--out", default="bench/results/memory.json")
    args = parser.parse_args()

    import ray
    from ray import cloudpickle
    from ray.data import DataContext

    for module in (sys.modules[__name__], throughput):  # the workers import neither by name
        cloudpickle.register_pickle_by_value(module)
    started = time.perf_counter()
    result = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs, no GPU, "
                         f"Python {platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}",
              "config": throughput.LOCAL_CONFIG, "mode": MODE, "args": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        lake, days = make_lake(tmp + "/lake", args)
        stream_day_mb = add_stream_days(lake, args)
        result["window_mb"] = {"train1": days[0].nbytes / 2**20, "train4": sum(t.nbytes for t in days) / 2**20,
                               "stream1": stream_day_mb, "stream4": 4 * stream_day_mb}
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
        DataContext.get_current().enable_progress_bars = False
        try:
            for workers in (1, 2):
                result[f"workers_{workers}"] = run_workers(lake, workers, Path(tmp, f"w{workers}"))
        finally:
            ray.shutdown()
    result["growth_4_vs_1_day_mb"] = growth(result)
    result["verdict"] = verdict(result)
    result["seconds"] = time.perf_counter() - started
    print_report(result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} ({result['seconds']:.0f}s)")
    sys.stdout.flush()
    os._exit(0)  # this process read Delta tables


if __name__ == "__main__":
    main()
