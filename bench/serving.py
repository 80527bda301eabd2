"""Serving latency: the exported DNR reranker next to PRM rerankers of the same size.

    python bench/serving.py                       # local.yaml and default ModelConfig sizes
    python bench/serving.py --repeats 50 --batch-sizes 1 64

For each model size (``local``: the model and data sections of ``jobs/configs/local.yaml``;
``default``: ``JobConfig()``) and each score mode (``denoise`` = DNR; ``none`` = plain PRM;
``concat`` = PRM with the score as an input feature, the same token MLP as DNR), one reranker is
built, exported with :func:`dnr.serving.export_reranker` and loaded back with
:func:`dnr.serving.load_artifact`. Two paths are timed per call, on the same raw-id inputs
(synthetic requests, L = 50 candidates, history up to 50, collated with ``hash_ids=False``):

* ``eager``: :class:`dnr.serving.ServingProgram` (in-torch hashing + the reranker's forward)
  as a plain ``nn.Module`` under ``inference_mode``;
* ``exported``: ``ServingReranker.score``, the loaded ``torch.export`` program plus input checks.

Every (mode, path) variant of a size and batch size takes turns call by call, so that a change
of the machine's load hits all of them alike; median, p90 and min of the per-call seconds over
``--repeats`` calls at the largest batch size (proportionally more, up to 10x, at smaller ones),
after ``--warmup`` untimed calls each. On a shared machine the min is the least disturbed
estimate of the compute itself; median and p90 include the machine's contention. DNR's extra serving work over
``none`` is the score-embedding MLP (Linear(1, d), GELU, Linear(d, d)) added to each token and
``logit(x)`` added to the output; over ``concat``, only the ``logit(x)`` addition.

Writes ``bench/results/serving.json`` (every figure, ratio, the command and the machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from dnr.config import DataConfig, JobConfig, load_config
from dnr.data.collate import collate
from dnr.datasets.synth import make_requests
from dnr.datasets.synth_world import WorldConfig
from dnr.models import build_reranker
from dnr.serving import ServingProgram, ServingReranker, export_reranker, load_artifact

LOCAL_CONFIG = "jobs/configs/local.yaml"
MODES = ("none", "concat", "denoise")
"""PRM without scores, PRM with the score as a feature, DNR (all at the same size)."""
PATHS = ("eager", "exported")
MAX_REPEAT_FACTOR = 10
RESULTS = Path(__file__).resolve().parent / "results" / "serving.json"


def size_configs() -> dict[str, JobConfig]:
    """The two model sizes the issue asks for; the score mode is set per variant."""
    return {"local": load_config(LOCAL_CONFIG), "default": JobConfig()}


def with_mode(cfg: JobConfig, mode: str, list_len: int, history_len: int) -> JobConfig:
    return dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, max_list_len=list_len, history_len=history_len),
        model=dataclasses.replace(cfg.model, score_mode=mode))


def request_inputs(batch_size: int, list_len: int, history_len: int, data_cfg: DataConfig) -> tuple:
    """(item_ids, scores, history_ids, mask, history_mask) of ``batch_size`` synthetic requests,
    raw ids as a serving system would pass them."""
    world = WorldConfig(list_len=list_len, history_max_len=history_len)
    table = make_requests(world, dt.date(2026, 1, 1), np.arange(batch_size))
    batch = collate(table, data_cfg, hash_ids=False)
    return batch.item_ids, batch.scores, batch.history_ids, batch.mask, batch.history_mask


@dataclasses.dataclass
class Variant:
    """One score mode at one size: the eager program and the artifact made from it."""

    eager: ServingProgram
    exported: ServingReranker
    params: int


def build_variant(cfg: JobConfig, directory: Path) -> Variant:
    torch.manual_seed(0)
    reranker = build_reranker(cfg.model, cfg.data).eval()
    torch.nn.init.normal_(reranker.head[-1].weight, std=0.1)  # not the zero init: a real head
    serving = load_artifact(export_reranker(reranker, cfg, directory))
    shutil.rmtree(directory)  # the default size's artifact is ~135 MB; the program is loaded
    return Variant(ServingProgram(reranker, cfg.data).eval(), serving,
                   sum(p.numel() for p in reranker.parameters()))


def _calls(variant: Variant, inputs: tuple) -> dict[str, Callable[[], torch.Tensor]]:
    """The two timed paths, checked to agree on ``inputs`` first."""
    item_ids, scores, history_ids, mask, history_mask = inputs

    def eager() -> torch.Tensor:
        with torch.inference_mode():  # as ServingReranker.score runs the artifact
            return variant.eager(item_ids, mask, scores, history_ids, history_mask)

    def exported() -> torch.Tensor:
        return variant.exported.score(item_ids, scores, history_ids, mask, history_mask)

    difference = float((eager() - exported()).abs().max())
    if difference > 1e-4:
        raise AssertionError(f"artifact and eager model differ by {difference}")
    return {"eager": eager, "exported": exported}


def time_variants(calls: dict[tuple[str, str], Callable], repeats: int, warmup: int) -> dict:
    """Seconds per call of each variant, the variants taking turns call by call."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    seconds = {key: [] for key in calls}
    for _ in range(repeats):
        for key, call in calls.items():
            start = time.perf_counter()
            call()
            seconds[key].append(time.perf_counter() - start)
    return seconds


def summarise(seconds: list[float], batch_size: int) -> dict:
    ms = np.asarray(seconds) * 1e3
    median, p90 = float(np.median(ms)), float(np.percentile(ms, 90))
    return {"median_ms": median, "p90_ms": p90, "min_ms": float(ms.min()),
            "median_ms_per_request": median / batch_size, "p90_ms_per_request": p90 / batch_size,
            "calls": len(ms)}


def ratios(stats: dict) -> dict:
    """DNR over each PRM baseline present, per path, and exported over eager per mode."""
    out = {}
    for q in ("median_ms", "p90_ms", "min_ms"):
        for path in PATHS:
            for base in ("none", "concat"):
                if "denoise" in stats and base in stats:
                    out[f"denoise/{base} {path} {q}"] = stats["denoise"][path][q] / stats[base][path][q]
        for mode in stats:
            out[f"exported/eager {mode} {q}"] = stats[mode]["exported"][q] / stats[mode]["eager"][q]
    return out


def repeats_for(batch_size: int, batch_sizes: Sequence[int], repeats: int) -> int:
    """``repeats`` calls at the largest batch, proportionally more (up to 10x) at smaller ones:
    a call of a few ms on a shared machine is often preempted, so its median needs more calls."""
    return repeats * min(MAX_REPEAT_FACTOR, max(1, max(batch_sizes) // batch_size))


def run_benchmark(sizes: dict[str, JobConfig], batch_sizes: Sequence[int], list_len: int, history_len: int,
                  repeats: int, warmup: int, modes: Sequence[str] = MODES,
                  log: Callable[[str], None] = print) -> dict:
    """{size: {"model", "num_buckets", "params": {mode: n}, "batches": {B: {"stats", "ratios"}}}};
    stats[mode][path] holds median/p90 ms per call and per request."""
    results = {}
    for size, base in sizes.items():
        cfgs = {mode: with_mode(base, mode, list_len, history_len) for mode in modes}
        with tempfile.TemporaryDirectory(prefix="dnr-serving-bench-") as tmp:
            variants = {mode: build_variant(cfg, Path(tmp, mode)) for mode, cfg in cfgs.items()}
        entry = {"model": dataclasses.asdict(base.model) | {"score_mode": list(modes)},
                 "num_buckets": base.data.num_buckets, "list_len": list_len, "history_len": history_len,
                 "params": {mode: v.params for mode, v in variants.items()}, "batches": {}}
        for batch_size in batch_sizes:
            inputs = request_inputs(batch_size, list_len, history_len, cfgs[modes[0]].data)
            calls = {(mode, path): call for mode, variant in variants.items()
                     for path, call in _calls(variant, inputs).items()}
            seconds = time_variants(calls, repeats_for(batch_size, batch_sizes, repeats), warmup)
            stats = {mode: {path: summarise(seconds[(mode, path)], batch_size) for path in PATHS}
                     for mode in modes}
            entry["batches"][str(batch_size)] = {"stats": stats, "ratios": ratios(stats)}
            log(f"{size} B={batch_size}: " + ", ".join(
                f"{m} {p} {stats[m][p]['median_ms']:.2f} ms" for m in modes for p in PATHS))
        results[size] = entry
    return results


def machine() -> dict:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout if shutil.which("lscpu") else ""
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    return {"nproc": os.cpu_count(), "model_name": fields.get("Model name", "").strip(),
            "architecture": platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    p.add_argument("--list-len", type=int, default=50)
    p.add_argument("--history-len", type=int, default=50)
    p.add_argument("--repeats", type=int, default=100,
                   help="calls per variant at the largest batch size (up to 10x more at smaller ones)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (one serving worker)")
    p.add_argument("--out", default=str(RESULTS))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    results = run_benchmark(size_configs(), args.batch_sizes, args.list_len, args.history_len,
                            args.repeats, args.warmup)
    report = {"command": " ".join(["python bench/serving.py", *(sys.argv[1:] if argv is None else argv)]),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "args": vars(args), "results": results,
              "load_average_1m": {"start": load_start, "end": os.getloadavg()[0]},
              "seconds": time.perf_counter() - started}
    for size, entry in results.items():
        for batch_size, batch in entry["batches"].items():
            print(f"{size} B={batch_size}: " + ", ".join(f"{k} {v:.3f}" for k, v in batch["ratios"].items()
                                                           if "median" in k))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out} ({report['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
