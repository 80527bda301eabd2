"""Write synthetic request logs (the platform's input) into a lake, a day at a time
(``dnr generate``, ``python jobs/generate_logs.py``).

    dnr generate --lake /tmp/lake --days 3 --requests-per-day 20000
    dnr generate --lake /tmp/lake --days 1        # appends the next day
    ray job submit -- python jobs/generate_logs.py --lake s3://bucket/lake --start 2024-01-01

Runs on the current Ray cluster if there is one (``ray job submit``, ``RAY_ADDRESS``), else
starts a local Ray. The world is described in :mod:`dnr.datasets.synth`. A day that is already in
the table is refused unless ``--overwrite-days``; so is a table whose schema is not the one
written here (a column added or retyped by the platform), naming the columns. Both refusals,
and bad arguments, come before Ray starts and before any file is written: one line on stderr,
exit status 1 (2 for arguments argparse refuses). A run that fails later deletes the files it
wrote, so the table's directory holds nothing uncommitted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time

from dnr.datasets.synth_lake import (
    DEFAULT_START,
    DaysExistError,
    SchemaMismatchError,
    plan_write,
    write_request_logs,
)
from dnr.datasets.synth_world import WorldConfig
from dnr.storage import Lake


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", default="./lake", help="lake root: a local directory or s3://bucket/prefix")
    p.add_argument("--start", type=dt.date.fromisoformat, default=None,
                   help=f"first day, YYYY-MM-DD (default: the day after the table's last day, else {DEFAULT_START})")
    p.add_argument("--days", type=_positive_int, default=1, help="consecutive days to write")
    p.add_argument("--requests-per-day", type=_positive_int, default=10_000)
    p.add_argument("--users", type=int, default=WorldConfig.num_users, help="users in the world (never stored)")
    p.add_argument("--items", type=int, default=WorldConfig.num_items, help="items in the world (never stored)")
    p.add_argument("--seed", type=int, default=WorldConfig.seed, help="world seed: same seed, same rows")
    p.add_argument("--shown-k", type=int, default=0,
                   help="only the top-K of each list is shown and labelled (default 0: all; exposed stays null)")
    p.add_argument("--overwrite-days", action="store_true",
                   help="replace days that already exist (one Delta commit) instead of refusing")
    return p.parse_args(argv)  # fmt: skip


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    try:  # everything that can be refused is refused here, before Ray starts (seconds on a laptop)
        world = WorldConfig(seed=args.seed, num_users=args.users, num_items=args.items, shown_k=args.shown_k)
        lake = Lake(args.lake)
        plan_write(lake, start=args.start, days=args.days, overwrite_days=args.overwrite_days)
    except ValueError as e:  # DaysExistError, SchemaMismatchError included
        sys.exit(f"generate_logs: {e}")

    import ray

    if not ray.is_initialized():
        ray.init()  # joins the cluster under `ray job submit` / RAY_ADDRESS, else starts a local one
    began = time.perf_counter()
    try:
        summary = write_request_logs(
            lake, world, start=args.start, days=args.days,
            requests_per_day=args.requests_per_day, overwrite_days=args.overwrite_days,
        )  # fmt: skip
    except (DaysExistError, SchemaMismatchError) as e:  # the table changed since the check above
        sys.exit(f"generate_logs: {e}")

    seconds = time.perf_counter() - began
    print(f"\nwrote {summary.table_uri} in {seconds:.1f}s, table version {summary.version}")
    for day, rows in summary.rows_per_day.items():
        print(f"  ds={day}  {rows:>12,} rows" + ("  (replaced)" if day in summary.overwritten_days else ""))
    print(f"world: seed={world.seed} users={world.num_users:,} items={world.num_items:,} shown_k={world.shown_k}")
    print(f"next:  python jobs/train_daily.py --lake {lake.root}")
    return 0

