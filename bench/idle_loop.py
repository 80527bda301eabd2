"""Idle-loop benchmark: the CPU Ray Data's streaming_split coordinator uses while its consumers
are slower than the reads, without and with :class:`dnr.data.idle.IdleBackoff`.

A window of ``--requests`` requests is read through ``Window.validated`` (the training
stream's read and validation) with a read-ahead budget smaller than the window
(``--budget-mb``), split between two consumer actors, as Ray Train splits it between two
workers. Each consumer sleeps ``--step-s`` per batch of 128 in place of a training step, so the
CPU measured is the data path's own. The two modes run one after the other on one local Ray;
the coordinator's CPU seconds are read from ``/proc`` (Linux).

    python bench/idle_loop.py                  # 80,000 requests, 8 MB budget, 100 ms steps

Results: bench/results/idle_loop.json and a line per mode on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/idle_loop.py` from anywhere

from bench.ingest import make_lake  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def _pids(needle: str) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and needle in open(f"/proc/{entry}/cmdline").read():
                found.add(int(entry))
        except OSError:
            continue
    return found


def _cpu_s(pid: int) -> float:
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_mode(window, data_cfg, backoff: bool, args) -> dict:
    import ray
    from ray.data import DataContext, ExecutionResources

    from dnr.data import idle

    context = DataContext.get_current()
    context.custom_execution_callback_classes = [idle.IdleBackoff] if backoff else []
    context.execution_options.resource_limits = ExecutionResources(
        object_store_memory=args.budget_mb * 1024**2)

    @ray.remote(num_cpus=1)
    class Consumer:
        def eat(self, shard, step_s: float) -> int:
            rows = 0
            for batch in shard.iter_batches(batch_size=128, batch_format="pyarrow"):
                time.sleep(step_s)
                rows += batch.num_rows
            return rows

    before = _pids("SplitCoordinator")
    consumers = [Consumer.remote() for _ in range(2)]
    shards = window.validated(data_cfg).streaming_split(2, equal=True)
    started = time.monotonic()
    rows = sum(ray.get([c.eat.remote(s, args.step_s) for c, s in zip(consumers, shards)]))
    wall = time.monotonic() - started
    coordinators = _pids("SplitCoordinator") - before
    cpu = sum(_cpu_s(pid) for pid in coordinators)
    for c in consumers:
        ray.kill(c)
    return {"backoff": backoff, "rows": rows, "wall_s": round(wall, 2),
            "coordinator_cpu_s": round(cpu, 2), "coordinator_cpu_per_wall_s": round(cpu / wall, 3)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=80_000)
    p.add_argument("--budget-mb", type=int, default=8)
    p.add_argument("--step-s", type=float, default=0.1)
    p.add_argument("--out", default=str(RESULTS / "idle_loop.json"))
    args = p.parse_args(argv)

    import ray

    from dnr.config import DataConfig
    from dnr.data.window import Window

    lake = make_lake(tempfile.mkdtemp(prefix="dnr-idle-"), args.requests)
    window = Window.open(lake, "2026-01-01", "2026-01-01")
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    runs = [run_mode(window, DataConfig(), backoff, args) for backoff in (False, True)]
    out = {"command": "python bench/idle_loop.py", "args": vars(args),
           "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs, Python "
                      f"{platform.python_version()}, ray {ray.__version__}",
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "window_files": len(window.files), "runs": runs,
           "coordinator_cpu_ratio": round(runs[1]["coordinator_cpu_s"] / runs[0]["coordinator_cpu_s"], 3)}
    for run in runs:
        print(f"[idle] backoff={run['backoff']}: {run['rows']:,} rows in {run['wall_s']} s, "
              f"coordinator {run['coordinator_cpu_s']} CPU-s ({run['coordinator_cpu_per_wall_s']} per s)")
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"[idle] wrote {args.out}")
    ray.shutdown()
    os._exit(0)  # a process that read a Delta table can abort at exit (delta-rs #2184)


if __name__ == "__main__":
    raise SystemExit(main())
