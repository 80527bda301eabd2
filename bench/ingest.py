"""Ingest benchmark: requests/s from Delta -> validated -> collated ``RerankBatch``.

Measures, in one run on the same data (L=50 candidates, history 50):

* ``in-process``: pyarrow reads the window's files, :func:`validate.split` and :func:`collate`
  in the driver: the cost of our own code per request, no Ray.
* ``ray-data``: the production path: ``Window.validated`` (Ray Data read + ``map_batches``
  validation) iterated in batches, collated.
* ``train step``: one DNR reranker step (denoise, heuristic generator) on the same batches on
  this machine, for the ratio ingest / training the daily job depends on.
* ``reader``: the wall time of one execution reading the window, with warm Ray workers, through
  ``Window.read`` (Ray Data's file-list Parquet reader) and through 2.60's default DataSourceV2
  reader on the same files and options: a fixed cost every daily run pays several times.

    python bench/ingest.py --requests 20000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from dnr.config import DataConfig, DNRConfig, ModelConfig, OptimConfig
from dnr.data import validate
from dnr.data.collate import collate
from dnr.datasets.synth import make_requests
from dnr.datasets.synth_world import WorldConfig
from dnr.data.window import Window
from dnr.storage import Lake

DAY = dt.date(2026, 1, 1)


def make_lake(root: str, requests: int) -> Lake:
    from deltalake import write_deltalake

    lake = Lake(root)
    world = WorldConfig(seed=0)
    step = 4096
    for start in range(0, requests, step):
        import numpy as np

        table = make_requests(world, DAY, np.arange(start, min(start + step, requests)))
        write_deltalake(lake.table_uri("request_logs"), table, partition_by=["ds"], mode="append")
    return lake


def bench_in_process(window: Window, cfg: DataConfig) -> tuple[float, int, dict]:
    stages = {"read": 0.0, "validate": 0.0, "collate": 0.0}
    n = 0
    start = time.perf_counter()
    for path in window.files:
        t0 = time.perf_counter()
        table = pq.read_table(path)
        table = table.append_column("ds", pa.array([DAY.isoformat()] * table.num_rows))
        t1 = time.perf_counter()
        kept, _, _ = validate.split(table, cfg.max_list_len)
        t2 = time.perf_counter()
        for offset in range(0, kept.num_rows, cfg.batch_size):
            n += collate(kept.slice(offset, cfg.batch_size), cfg).num_requests
        t3 = time.perf_counter()
        stages["read"] += t1 - t0
        stages["validate"] += t2 - t1
        stages["collate"] += t3 - t2
    return time.perf_counter() - start, n, stages


def bench_ray(window: Window, cfg: DataConfig) -> tuple[float, float, int]:
    """(total seconds, seconds after the first batch, requests)."""
    start = time.perf_counter()
    first = None
    n = 0
    for batch in window.validated(cfg).iter_batches(batch_size=cfg.batch_size, batch_format="pyarrow"):
        n += collate(batch, cfg).num_requests
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    return end - start, end - first, n


def bench_readers(window: Window, repeats: int) -> dict[str, list[float]]:
    """Seconds of each of ``repeats`` executions per reader (after one warm-up of each)."""
    import ray.data
    from ray.data import DataContext

    from dnr.data import delta_files

    def default_reader():
        assert DataContext.get_current().use_datasource_v2, "Ray's default reader is DataSourceV2"
        return ray.data.read_parquet([window.lake.fs_path(f) for f in window.files],
                                     filesystem=window.lake.filesystem(),
                                     fragment_scan_options=delta_files.verified_scan_options())

    readers = {"window_read": window.read, "datasource_v2": default_reader}
    seconds = {name: [] for name in readers}
    for _ in range(repeats + 1):
        for name, make in readers.items():
            start = time.perf_counter()
            rows = sum(b.num_rows for b in make().iter_batches(batch_size=None, batch_format="pyarrow"))
            seconds[name].append(time.perf_counter() - start)
            assert rows == window.rows_read, (name, rows)
    return {name: values[1:] for name, values in seconds.items()}


def bench_train_step(window: Window, cfg: DataConfig, steps: int) -> tuple[float, int]:
    from dnr.training.step import build_train_parts, train_step

    model_cfg, dnr_cfg, optim_cfg = ModelConfig(score_mode="denoise"), DNRConfig(), OptimConfig()
    parts = build_train_parts(model_cfg, cfg, dnr_cfg, optim_cfg)
    table = pq.read_table(window.files[0]).slice(0, cfg.batch_size * (steps + 1))
    batches = [collate(table.slice(i * cfg.batch_size, cfg.batch_size), cfg) for i in range(steps + 1)]
    train_step(batches[0], parts, 0, model_cfg, dnr_cfg, optim_cfg)  # warm-up
    start = time.perf_counter()
    for i, batch in enumerate(batches[1:], start=1):
        train_step(batch, parts, i, model_cfg, dnr_cfg, optim_cfg)
    return time.perf_counter() - start, steps * cfg.batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--reader-repeats", type=int, default=3)
    parser.add_argument("--out", default="bench/results/ingest.json")
    args = parser.parse_args()

    import ray
    from ray.data import DataContext

    cfg = DataConfig(max_list_len=50, history_len=50, batch_size=256)
    with tempfile.TemporaryDirectory() as tmp:
        lake = make_lake(tmp + "/lake", args.requests)
        window = Window.open(lake, DAY.isoformat(), DAY.isoformat())
        print(f"{window.rows_read} requests in {len(window.files)} files, L=50, history<=50, "
              f"batch {cfg.batch_size}")
        seconds, n, stages = bench_in_process(window, cfg)
        in_process = n / seconds
        print(f"in-process : {in_process:10,.0f} requests/s  "
              + "  ".join(f"{k} {v / seconds:.0%}" for k, v in stages.items()))

        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
        DataContext.get_current().enable_progress_bars = False
        total, steady, n_ray = bench_ray(window, cfg)
        readers = bench_readers(window, args.reader_repeats)
        ray.shutdown()
        print(f"ray-data   : {n_ray / total:10,.0f} requests/s end to end ({total:.1f}s incl. start-up), "
              f"{(n_ray - cfg.batch_size) / steady:,.0f} requests/s after the first batch")

        median = {name: sorted(v)[len(v) // 2] for name, v in readers.items()}
        print(f"reader     : one execution {median['window_read']:.2f}s (Window.read), "
              f"{median['datasource_v2']:.2f}s (Ray's DataSourceV2), "
              f"{median['datasource_v2'] / median['window_read']:.1f}x (median of {args.reader_repeats})")

        torch.set_num_threads(2)
        train_s, n_train = bench_train_step(window, cfg, args.train_steps)
        train = n_train / train_s
        print(f"DNR step   : {train:10,.0f} requests/s (d=128, 2 layers, CPU, 2 threads)")
        print(f"ratio ingest(in-process) / train = {in_process / train:.1f}x, "
              f"ingest(ray, steady) / train = {(n_ray - cfg.batch_size) / steady / train:.1f}x")

    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, {platform.python_version()}",
        "requests": args.requests,
        "in_process_rps": in_process, "in_process_stage_share": {k: v / seconds for k, v in stages.items()},
        "ray_data_rps_end_to_end": n_ray / total, "ray_data_rps_steady": (n_ray - cfg.batch_size) / steady,
        "dnr_train_step_rps": train,
        "read_execution_s": readers,
        "read_execution_ratio_v2_over_window_read": median["datasource_v2"] / median["window_read"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
