"""The daily incremental training job (``dnr train``, ``python jobs/train_daily.py``).

    dnr train                                    # embedded: local Ray, ./lake, demo data if empty
    dnr train --lake /tmp/l --demo               # the demo world into another empty lake
    dnr train --lake s3://bucket/lake --ds 2026-05-02 --config cluster/configs/daily_gpu.yaml
    dnr train --lake s3://bucket/lake --config cluster/configs/daily_gpu.yaml --dry-run   # the plan only
    ray job submit --working-dir . -- python jobs/train_daily.py --lake s3://bucket/lake \\
        --config cluster/configs/daily_gpu.yaml
    dnr train train.epochs=2 model.score_mode=concat   # key=value overrides (dnr config show lists them)

Trains the next version of the model from the partitions after its parent's window up to the
day before --ds (default: the newest partition), registers it as a candidate, and prints a
summary. Re-running the same day with the same parent and table version does nothing (--force
trains again). --dry-run prints the plan (parent, window, pinned table version, each partition's
files and rows from the Delta log, late rows) and exits without starting Ray.

Config: --config, else on an embedded Ray jobs/configs/local.yaml. Under ``ray job submit``
(RAY_ADDRESS set) a run without --config is refused (status 2): the dataclass defaults are no
tested recipe (validation off); pass cluster/configs/daily_gpu.yaml, or an empty file for them.

Arguments, config and --ds are checked before Ray starts; a refusal is one line on stderr
(--verbose adds its traceback). A --ds more than train.max_window_days days after the newest
partition is refused as a likely typo (with max_window_days=0, no limit, any later day is taken).
Exit statuses (dnr.runtime): 0 done (trained, up to date, or the plan printed); 2 bad argument or
config; 66 the lake is not a directory or has no request_logs (without --demo); 75 another run
holds the lake's lease; 130 Ctrl-C; 143 SIGTERM. On 130 and 143 the lease is released and the
embedded Ray's processes are stopped; a re-run resumes from the run's last checkpoint.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from dnr import runtime
from dnr.config import describe_config, load_config
from dnr.data.window import parse_ds, table_partitions
from dnr.runtime import (
    EXIT_LEASE_HELD,
    EXIT_NO_INPUT,
    EXIT_USAGE,
    JobArgumentParser,
    JobError,
    accept_stop_signals,
    check_lake,
    embedded_ray,
    run_stoppable,
)
from dnr.storage import Lake

LOCAL_CONFIG = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "local.yaml"
"""The laptop recipe an embedded run uses without --config (in a source checkout)."""
#: embedded default world: small enough to train in a few minutes on 2 CPU cores
EMBEDDED_WORLD = {"days": 4, "requests_per_day": 15_000}
DEFAULT_LAKE = "./lake"
CONFIG_KEYS = "config keys: `dnr config show` lists every key with its value and help"


def parse_args(argv=None, prog: str | None = None) -> argparse.Namespace:
    p = JobArgumentParser(prog=prog, description=__doc__, epilog=CONFIG_KEYS,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", default=DEFAULT_LAKE, help="lake root: local directory or s3://bucket/prefix")
    p.add_argument("--demo", action="store_true",
                   help="generate the small demo world into --lake when it has no request_logs "
                        "(the default ./lake on an embedded Ray does this without asking)")
    p.add_argument("--ds", default=None, help="day D (YYYY-MM-DD): train up to D-1, hold out D")
    p.add_argument("--config", default=None,
                   help="YAML config (default on an embedded Ray: jobs/configs/local.yaml; "
                        "required under ray job submit)")
    p.add_argument("--force", action="store_true", help="train even if an equivalent version exists")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (parent, window, table version, partitions, rows) and exit: "
                        "no Ray, no training, nothing written")
    p.add_argument("--num-cpus", type=int, default=None, help="logical CPUs of an embedded Ray")
    p.add_argument("--json", default=None, help="also write the result as JSON to this file")
    p.add_argument("--verbose", action="store_true",
                   help="also show the workers' output and Ray Data's INFO lines (always in Ray's logs)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. train.epochs=2")
    return p.parse_args(argv)


def main(argv=None, prog: str | None = None) -> int:
    accept_stop_signals()  # first: every thread started later inherits the mask
    return run_stoppable("daily", _run, parse_args(argv, prog), after_stop=(
        ": the lake's lease is released; run the same command again to resume (a run stopped in "
        "training resumes from its last checkpoint)"))


def config_path(given: str | None) -> str | Path | None:
    """The config file a run reads: --config; else, on an embedded Ray, jobs/configs/local.yaml.
    Refused: no --config under ``ray job submit``, or on an install without the laptop recipe."""
    if given:
        return given
    if not embedded_ray():
        raise JobError("under ray job submit (RAY_ADDRESS is set) pass --config: the dataclass defaults "
                       "have validation off and are no tested recipe. Use cluster/configs/daily_gpu.yaml "
                       "(or an empty YAML file to train on the defaults on purpose; `dnr config show` "
                       "prints them)", EXIT_USAGE)
    if not LOCAL_CONFIG.exists():
        raise JobError(f"no --config, and the laptop recipe {LOCAL_CONFIG} is not in this install: "
                       "pass --config (an empty YAML file trains on the dataclass defaults)", EXIT_USAGE)
    return LOCAL_CONFIG


def _run(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    try:
        cfg = load_config(path, args.overrides)
        ds = args.ds and parse_ds(args.ds, "--ds")
        lake = Lake(args.lake)
    except ValueError as error:
        raise JobError(str(error)) from error
    check_lake(lake)
    demo = not _has_logs(lake)
    if demo and not (args.demo or (args.lake == DEFAULT_LAKE and embedded_ray())):
        raise JobError(f"not started: {lake.table_uri('request_logs')} does not exist. Point --lake at a lake "
                       "with request_logs (dnr generate, jobs/generate_logs.py, writes synthetic ones), or "
                       "add --demo to generate the small demo world there.", EXIT_NO_INPUT)
    if ds and not demo:
        _check_day(lake, ds, cfg.train.max_window_days)
    if args.dry_run:
        from dnr.cli.plan import print_plan

        return print_plan(lake, cfg, path, ds=ds, force=args.force, demo=demo and EMBEDDED_WORLD)
    return _train(lake, cfg, path, args, demo)


def _train(lake: Lake, cfg, path, args: argparse.Namespace, demo: bool) -> int:
    from dnr.daily.report import result_json, summary_table
    from dnr.daily.run import run_daily
    from dnr.lease import LeaseHeld

    runtime.start_ray(args.num_cpus, verbose=args.verbose)
    print(f"[daily] lake {lake.root}; config {path or '(defaults)'}:\n{describe_config(cfg)}")
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
