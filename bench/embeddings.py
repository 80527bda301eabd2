"""Embedding-table benchmark: one DNR adversarial step with the item table sharded across the
workers, against the same step with the table replicated and updated densely, as the size of
the table grows.

For each size (2^16, 2^20, 2^24 buckets; d=64) it starts a fresh gloo process group of
``--workers`` processes (one torch thread each) and times ``train_step`` of the DNR adversarial
phase (``dnr.lambda_e=0``: the reranker half-step and the generator half-step) on random
requests (B=128, L=50, history 50, ids uniform over the buckets: a batch touches ~12,800 rows):

* ``sharded``: the training path, ``dnr.training.sharding.distribute``: TorchRec row-wise
  sharding, fused row-wise Adagrad in the backward (only the touched rows are updated);
* ``dense``: the path before sharding: every worker holds the whole table, DDP all-reduces its
  dense gradient and AdamW updates every row at every step (only where it fits in memory);
* ``sharded`` on 1 worker at the largest size: the whole table on one worker, to compare the
  per-worker table memory.

Each worker reports the median step time over the timed steps (the step time of a size is the
slowest rank's median), its peak RSS (``ru_maxrss``) and the bytes of its table rows. The result
file's ``step_ratio_largest_vs_smallest`` is sharded step time at the largest size over the
smallest, in this one run.

    python bench/embeddings.py            # 2^16, 2^20, 2^24; writes bench/results/embeddings.json
    python bench/embeddings.py --quick    # 2^16 and 2^20, fewer steps (under 3 minutes)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dnr.config import JobConfig, load_config
from dnr.data.batch import RerankBatch

RESULTS = Path(__file__).parent / "results" / "embeddings.json"
DENSE_LIMIT = 2**20
"""Largest dense-replicated size run: at 2^24 x 64 the table, its gradient and AdamW's two
moments take 16 GiB per worker, more than two workers have on a 24 GiB machine."""


def config(buckets: int) -> JobConfig:
    return load_config(None, [f"data.num_buckets={buckets}", "data.batch_size=128", "data.max_list_len=50",
                              "data.history_len=50", "model.d_model=64", "model.n_layers=1", "model.n_heads=2",
                              "model.ff_dim=128", "model.score_mode=denoise", "dnr.lambda_e=0"])


def random_batch(cfg: JobConfig, seed: int) -> RerankBatch:
    gen = torch.Generator().manual_seed(seed)
    b, length, history = cfg.data.batch_size, cfg.data.max_list_len, cfg.data.history_len
    labels = (torch.rand(b, length, generator=gen) < 0.06).float()
    return RerankBatch(
        item_ids=torch.randint(1, cfg.data.num_buckets, (b, length), generator=gen),
        scores=(0.3 * labels + 0.7 * torch.rand(b, length, generator=gen)).clamp(0, 1),
        labels=labels, mask=torch.ones(b, length, dtype=torch.bool),
        label_mask=torch.ones(b, length, dtype=torch.bool),
        history_ids=torch.randint(1, cfg.data.num_buckets, (b, history), generator=gen),
        history_mask=torch.ones(b, history, dtype=torch.bool),
    )


def _dense_parts(cfg: JobConfig):
    """The replicated path: whole table on every worker, AdamW over every parameter, DDP."""
    from dnr.training.optimizers import ModelOptimizer, adamw
    from dnr.training.sharding import data_parallel
    from dnr.training.step import build_train_parts

    parts = build_train_parts(cfg.model, cfg.data, cfg.dnr, cfg.optim)
    params = list(parts.reranker.parameters())
    parts.reranker_opt = ModelOptimizer(adamw(params, cfg.optim.lr, 0.0), params)
    parts.reranker = data_parallel(parts.reranker, torch.device("cpu"))
    parts.generator = data_parallel(parts.generator, torch.device("cpu"))
    return parts


def _worker(rank: int, world: int, store: str, job: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    from dnr.training.sharding import distribute
    from dnr.training.step import build_train_parts, train_step

    cfg = config(job["buckets"])
    torch.manual_seed(rank)
    if job["mode"] == "sharded":
        parts = build_train_parts(cfg.model, cfg.data, cfg.dnr, cfg.optim, table_device="meta")
        parts = distribute(parts, torch.device("cpu"), cfg.train, cfg.optim)
        table = parts.reranker.state_dict()["item_embedding.collection.embeddings.item.weight"]
        table_bytes = sum(s.tensor.numel() * s.tensor.element_size() for s in table.local_shards())
    else:
        parts = _dense_parts(cfg)
        table_bytes = cfg.data.num_buckets * cfg.model.d_model * 4
    batches = [random_batch(cfg, seed=1000 * rank + i) for i in range(4)]
    times = []
    for step in range(job["warmup"] + job["steps"]):
        dist.barrier()
        start = time.perf_counter()
        train_step(batches[step % len(batches)], parts, step, cfg.model, cfg.dnr, cfg.optim)
        if step >= job["warmup"]:
            times.append(time.perf_counter() - start)
    out = {"rank": rank, "step_s": times, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "table_mb": table_bytes / 2**20}
    Path(job["out"], f"rank{rank}.json").write_text(json.dumps(out))
    dist.destroy_process_group()


def measure(buckets: int, mode: str, workers: int, warmup: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        job = {"buckets": buckets, "mode": mode, "warmup": warmup, "steps": steps, "out": tmp}
        began = time.monotonic()
        mp.start_processes(_worker, args=(workers, f"{tmp}/store", job), nprocs=workers, start_method="spawn")
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(workers)]
    medians = [statistics.median(r["step_s"]) for r in ranks]
    return {"buckets": buckets, "log2_buckets": buckets.bit_length() - 1, "mode": mode, "workers": workers,
            "step_ms": 1000 * max(medians), "step_ms_per_rank": [round(1000 * m, 2) for m in medians],
            "requests_per_s": workers * 128 / max(medians),
            "peak_rss_mb_per_worker": [round(r["peak_rss_mb"]) for r in ranks],
            "table_mb_per_worker": [round(r["table_mb"], 1) for r in ranks],
            "wall_s": round(time.monotonic() - began, 1)}


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "nproc": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads_per_worker": 1, "backend": "gloo (CPU)"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2^16 and 2^20 only, fewer steps")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    sizes = [2**16, 2**20] if args.quick else [2**16, 2**20, 2**24]
    warmup, steps = (2, 6) if args.quick else (3, 15)
    runs = []
    for buckets in sizes:
        modes = ["sharded"] + (["dense"] if buckets <= DENSE_LIMIT else [])
        for mode in modes:
            runs.append(measure(buckets, mode, args.workers, warmup, steps))
            r = runs[-1]
            print(f"2^{r['log2_buckets']:<2} {mode:7} {r['workers']} workers: step {r['step_ms']:8.1f} ms, "
                  f"peak RSS {r['peak_rss_mb_per_worker']} MB, table {r['table_mb_per_worker']} MB/worker "
                  f"({r['wall_s']} s)", flush=True)
    runs.append(measure(sizes[-1], "sharded", 1, warmup, steps))
    r = runs[-1]
    print(f"2^{r['log2_buckets']:<2} sharded 1 worker : step {r['step_ms']:8.1f} ms, peak RSS "
          f"{r['peak_rss_mb_per_worker']} MB, table {r['table_mb_per_worker']} MB/worker", flush=True)
    sharded = {r["buckets"]: r for r in runs if r["mode"] == "sharded" and r["workers"] == args.workers}
    ratio = sharded[sizes[-1]]["step_ms"] / sharded[sizes[0]]["step_ms"]
    one = runs[-1]["table_mb_per_worker"][0]
    result = {
        "command": "python bench/embeddings.py" + (" --quick" if args.quick else ""),
        "date": dt.date.today().isoformat(), "machine": machine(),
        "step": "DNR adversarial (reranker + generator half-steps), B=128, L=50, history 50, d=64, 1 layer",
        "step_ratio_largest_vs_smallest": round(ratio, 3),
        "largest_vs_smallest": [sizes[-1], sizes[0]],
        "table_mb_per_worker_vs_one_worker": round(max(sharded[sizes[-1]]["table_mb_per_worker"]) / one, 3),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"step_ratio_largest_vs_smallest = {ratio:.3f} (2^{sizes[-1].bit_length() - 1} / 2^{sizes[0].bit_length() - 1}, "
          f"sharded, {args.workers} workers); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)
    code = main()
    sys.stdout.flush()
    os._exit(code)
