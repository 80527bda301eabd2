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
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dnr.config import describe_config, load_config
from dnr.lease import LeaseHeld
from dnr.runtime import accept_ctrl_c, exit_process, start_ray
from dnr.storage import Lake
from dnr.training.daily import run_daily
from dnr.training.daily_report import result_json, summary_table

LOCAL_CONFIG = Path(__file__).resolve().parent / "configs" / "local.yaml"
#: embedded default world: small enough to train in a few minutes on 2 CPU cores
EMBEDDED_WORLD = dict(days=4, requests_per_day=15_000)
DEFAULT_LAKE = "./lake"
#: exit status when the lake has no request_logs and no demo world was asked for (EX_NOINPUT)
EXIT_NO_LOGS = 66
#: exit status after Ctrl-C (128 + SIGINT, as a shell reports it)
EXIT_INTERRUPTED = 130
#: exit status when another run holds the lake's lease (EX_TEMPFAIL: try again later)
EXIT_LEASE_HELD = 75


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    accept_ctrl_c()  # first: every thread started later inherits the mask
    args = parse_args(argv)
    lake = Lake(args.lake)
    demo = not _has_logs(lake)
    if demo and not (args.demo or (args.lake == DEFAULT_LAKE and "RAY_ADDRESS" not in os.environ)):
        print(f"[daily] not started: {lake.table_uri('request_logs')} does not exist. Point --lake "
              "at a lake with request_logs (jobs/generate_logs.py writes synthetic ones), or add "
              "--demo to generate the small demo world there.", file=sys.stderr)
        return EXIT_NO_LOGS
    embedded = start_ray(args.num_cpus, verbose=args.verbose)
    config_path = args.config or (LOCAL_CONFIG if embedded else None)
    cfg = load_config(config_path, args.overrides)
    print(f"[daily] lake {lake.root}; config {config_path or '(defaults)'}:\n{describe_config(cfg)}")

    try:
        if demo:
            _write_demo_world(lake, cfg)
        result = run_daily(lake, cfg, ds=args.ds, force=args.force)
    except KeyboardInterrupt:
        print("\n[daily] interrupted (Ctrl-C): the lake's lease is released; run the same command "
              "again to resume (a run stopped in training resumes from its last checkpoint)",
              file=sys.stderr)
        # at once: Ray's teardown would wait on the training thread (an embedded Ray's processes
        # share the driver's fate and end with it)
        exit_process(EXIT_INTERRUPTED)
    except LeaseHeld as held:
        # an overlapping schedule or a manual re-run: not a failure of this code, but nothing ran
        print(f"[daily] not started: {held}", file=sys.stderr)
        return EXIT_LEASE_HELD
    print("\n[daily] summary\n" + summary_table(result, lake))
    if args.json:
        Path(args.json).write_text(result_json(result) + "\n")
    return 0


def _write_demo_world(lake: Lake, cfg) -> None:
    """The demo world, written under the run's own lease: a lake another run holds is refused
    (``LeaseHeld``) before a byte is written to it."""
    from dnr.data.synth import write_request_logs
    from dnr.data.synth_world import WorldConfig
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
    sys.exit(main())
