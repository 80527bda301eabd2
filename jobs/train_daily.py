"""The daily incremental training job.

    python jobs/train_daily.py                      # embedded: local Ray, ./lake, demo data if empty
    python jobs/train_daily.py --lake /tmp/l --demo # the demo world into another empty lake
    python jobs/train_daily.py --lake s3://bucket/lake --ds 2026-05-02 --config cluster/configs/daily_gpu.yaml
    ray job submit --working-dir . -- python jobs/train_daily.py --lake s3://bucket/lake
    python jobs/train_daily.py train.epochs=2 model.score_mode=concat   # key=value overrides

Trains the next version of the model from the partitions after its parent's window up to the
day before --ds (default: the newest partition), registers it as a candidate, and prints a
summary. Re-running the same day with the same parent and table version does nothing (--force
trains again).

Arguments, config and --ds are checked before Ray starts; a refusal is one line on stderr
(--verbose adds its traceback). A --ds more than train.max_window_days days after the newest
partition is refused as a likely typo (with max_window_days=0, no limit, any later day is taken).
Exit statuses (dnr.runtime): 0 done (trained, or up to date); 2 bad argument or config; 66 the
lake is not a directory or has no request_logs (without --demo); 75 another run holds the lake's
lease; 130 Ctrl-C; 143 SIGTERM. On 130 and 143 the lease is released and the embedded Ray's
processes are stopped; a re-run resumes from the run's last checkpoint.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from dnr.config import describe_config, load_config
from dnr.data.window import parse_ds, table_partitions
from dnr.lease import LeaseHeld
from dnr.runtime import (
    EXIT_LEASE_HELD,
    EXIT_NO_INPUT,
    EXIT_USAGE,
    JobArgumentParser,
    JobError,
    accept_stop_signals,
    check_lake,
    embedded_ray,
    end_interrupted,
    end_job,
    interrupted_by,
    refuse,
    start_ray,
)
from dnr.storage import Lake
from dnr.daily.run import run_daily
from dnr.daily.report import result_json, summary_table

LOCAL_CONFIG = Path(__file__).resolve().parent / "configs" / "local.yaml"
#: embedded default world: small enough to train in a few minutes on 2 CPU cores
EMBEDDED_WORLD = dict(days=4, requests_per_day=15_000)
DEFAULT_LAKE = "./lake"


def parse_args(argv=None) -> argparse.Namespace:
    p = JobArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", default=DEFAULT_LAKE, help="lake root: local directory or s3://bucket/prefix")
    p.add_argument("--demo", action="store_true",
                   help="generate the small demo world into --lake when it has no request_logs "
                        "(the default ./lake on an embedded Ray does this without asking)")
    p.add_argument("--ds", default=None, help="day D (YYYY-MM-DD): train up to D-1, hold out D")
    p.add_argument("--config", default=None,
                   help="YAML config (default on an embedded Ray: jobs/configs/local.yaml)")
    p.add_argument("--force", action="store_true", help="train even if an equivalent version exists")
    p.add_argument("--num-cpus", type=int, default=None, help="logical CPUs of an embedded Ray")
    p.add_argument("--json", default=None, help="also write the result as JSON to this file")
    p.add_argument("--verbose", action="store_true",
                   help="also show the workers' output and Ray Data's INFO lines (always in Ray's logs)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. train.epochs=2")
    return p.parse_args(argv)


def main(argv=None) -> int:
    accept_stop_signals()  # first: every thread started later inherits the mask
    args = parse_args(argv)
    try:
        return _run(args)
    except JobError as error:
        return refuse("daily", error, args.verbose)
    except KeyboardInterrupt as stop:
        print(f"\n[daily] interrupted ({interrupted_by(stop)}): the lake's lease is released; run the same "
              "command again to resume (a run stopped in training resumes from its last checkpoint)",
              file=sys.stderr)
        end_interrupted(stop)  # at once, with the embedded Ray's processes


def _run(args: argparse.Namespace) -> int:
    config_path = args.config or (LOCAL_CONFIG if embedded_ray() else None)
    try:
        cfg = load_config(config_path, args.overrides)
        ds = args.ds and parse_ds(args.ds, "--ds")
        lake = Lake(args.lake)
    except ValueError as error:
        raise JobError(str(error)) from error
    check_lake(lake)
    demo = not _has_logs(lake)
    if demo and not (args.demo or (args.lake == DEFAULT_LAKE and embedded_ray())):
        raise JobError(f"not started: {lake.table_uri('request_logs')} does not exist. Point --lake at a lake "
                       "with request_logs (jobs/generate_logs.py writes synthetic ones), or add --demo to "
                       "generate the small demo world there.", EXIT_NO_INPUT)
    if ds and not demo:
        _check_day(lake, ds, cfg.train.max_window_days)
    start_ray(args.num_cpus, verbose=args.verbose)
    print(f"[daily] lake {lake.root}; config {config_path or '(defaults)'}:\n{describe_config(cfg)}")

    try:
        if demo:
            _write_demo_world(lake, cfg)
        result = run_daily(lake, cfg, ds=args.ds, force=args.force)
    except LeaseHeld as held:
        # an overlapping schedule or a manual re-run: not a failure of this code, but nothing ran
        raise JobError(f"not started: {held}", EXIT_LEASE_HELD) from held
    print("\n[daily] summary\n" + summary_table(result, lake))
    if args.json:
        Path(args.json).write_text(result_json(result) + "\n")
    return 0


def _check_day(lake: Lake, ds: str, max_window_days: int) -> None:
    """Refuse a --ds so far after the newest partition that it is more likely a typo'd year or
    month than a day to train for, before Ray starts (``max_window_days`` 0: no limit, no check)."""
    if not max_window_days:
        return
    _, partitions = table_partitions(lake)  # the Delta log, read on the driver: no Ray needed
    if partitions:
        gap = (dt.date.fromisoformat(ds) - dt.date.fromisoformat(partitions[-1])).days
        if gap > max_window_days:
            raise JobError(f"--ds {ds} is {gap} days after the newest partition of request_logs ({partitions[-1]}), "
                           f"more than train.max_window_days={max_window_days}: a typo? Omit --ds to hold out "
                           f"the newest day, or raise train.max_window_days", EXIT_USAGE)


def _write_demo_world(lake: Lake, cfg) -> None:
    """The demo world, written under the run's own lease: a lake another run holds is refused
    (``LeaseHeld``) before a byte is written to it."""
    from dnr.datasets.synth_lake import write_request_logs
    from dnr.datasets.synth_world import WorldConfig
    from dnr.lease import LakeLease

    with LakeLease.daily(lake, cfg.train.model_name, cfg.train.lease_ttl_s, owner="train_daily: demo world"):
        print(f"[daily] {lake.table_uri('request_logs')} does not exist: generating a small synthetic "
              f"world first ({EMBEDDED_WORLD['days']} days x {EMBEDDED_WORLD['requests_per_day']:,} requests)")
        write_request_logs(lake, WorldConfig(), **EMBEDDED_WORLD)


def _has_logs(lake: Lake) -> bool:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        DeltaTable(lake.table_uri("request_logs"), storage_options=lake.storage_options())
        return True
    except TableNotFoundError:
        return False


if __name__ == "__main__":
    end_job(main())  # Ray shut down, then exit_process: see dnr.runtime
