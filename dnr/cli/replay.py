"""Offline replay evaluation of a candidate model on a held-out day, and the promotion gate
(``dnr replay``, ``python jobs/replay_eval.py``).

    dnr replay --candidate latest --baseline production            # embedded Ray, ./lake
    dnr replay --lake s3://bucket/lake --candidate dnr-v0007 --ds 2026-05-04 --promote
    ray job submit --working-dir . -- python jobs/replay_eval.py --lake s3://bucket/lake \\
        --config cluster/configs/daily_gpu.yaml --promote
    dnr replay gate.tolerance=0.01 gate.min_requests=1000      # gate overrides

Scores every logged request of day --ds (default: the day after the candidate's training
window) with the candidate, the baseline, the retriever order and (synthetic data) the oracle;
prints the comparison and the gate's decision; writes the report with plots and one row of
replay_reports. With --promote the registry follows the decision (promote or reject).

Arguments, config, the versions and the day are checked before Ray starts; a refusal is one line
on stderr (--verbose adds its traceback). Exit statuses (dnr.runtime): 0 evaluated (whatever the
decision); 2 bad argument or config, an unknown version or a day that cannot be replayed; 66 the
lake is not a directory or has no request_logs; 130 Ctrl-C; 143 SIGTERM (the embedded Ray's
processes are stopped).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dnr import runtime
from dnr.config import load_config
from dnr.data.window import table_partitions
from dnr.registry import Registry
from dnr.runtime import (
    EXIT_NO_INPUT,
    JobArgumentParser,
    JobError,
    accept_stop_signals,
    check_lake,
    run_stoppable,
)
from dnr.storage import Lake

CONFIG_KEYS = "config keys: `dnr config show` lists every key with its value and help"


def parse_args(argv=None, prog: str | None = None) -> argparse.Namespace:
    p = JobArgumentParser(prog=prog, description=__doc__, epilog=CONFIG_KEYS,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", default="./lake", help="lake root: local directory or s3://bucket/prefix")
    p.add_argument("--candidate", default="latest", help="version to evaluate, or latest (newest candidate)")
    p.add_argument("--baseline", default="production",
                   help="version to compare with, production, or none (the retriever order only)")
    p.add_argument("--ds", default=None, help="day to replay (default: the day after the candidate's window)")
    p.add_argument("--model", default=None, help="model line (default: train.model_name of the config)")
    p.add_argument("--promote", action="store_true",
                   help="apply the decision: promote the candidate or mark it rejected")
    p.add_argument("--config", default=None, help="YAML config whose gate section is used")
    p.add_argument("--num-cpus", type=int, default=None, help="logical CPUs of an embedded Ray")
    p.add_argument("--json", default=None, help="also write the decision and metrics as JSON here")
    p.add_argument("--verbose", action="store_true",
                   help="also show the workers' output and Ray Data's INFO lines (always in Ray's logs)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. gate.tolerance=0.01")
    return p.parse_args(argv)


def main(argv=None, prog: str | None = None) -> int:
    accept_stop_signals()  # first: every thread started later inherits the mask
    return run_stoppable("replay", _run, parse_args(argv, prog))


def _run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + ([f"train.model_name={args.model}"] if args.model else [])
    try:
        lake = Lake(args.lake)
        cfg = load_config(args.config, overrides)
    except ValueError as error:
        raise JobError(str(error)) from error
    _check_replay(lake, cfg.train.model_name, args)
    from dnr.evaluation.replay import comparison_table, run_replay

    runtime.start_ray(args.num_cpus, verbose=args.verbose)
    result = run_replay(lake, cfg, candidate=args.candidate, baseline=args.baseline,
                        ds=args.ds, promote=args.promote)
    print(f"\n[replay] {result.report_id} ({result.seconds:.0f}s)\n" + comparison_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"report_id": result.report_id, "decision": result.decision, "reasons": result.reasons,
             "registry_action": result.registry_action, "report_uri": result.report_uri,
             "candidate": result.candidate, "baseline": result.baseline, "ds": result.ds,
             "metrics": result.summary.metrics}, indent=2, default=str) + "\n")
    return 0


def _check_replay(lake: Lake, model_name: str, args: argparse.Namespace) -> None:
    """What run_replay resolves first (the lake, the versions, the day), on the driver before Ray
    starts: the Delta logs of request_logs and the registry need no Ray."""
    from deltalake.exceptions import TableNotFoundError

    from dnr.evaluation.replay import held_out_day, resolve_versions

    check_lake(lake)
    try:
        _, partitions = table_partitions(lake)
    except TableNotFoundError:
        raise JobError(f"{lake.table_uri('request_logs')} does not exist: nothing to replay", EXIT_NO_INPUT) from None
    try:
        candidate, _ = resolve_versions(Registry(lake), model_name, args.candidate, args.baseline)
        held_out_day(candidate, partitions, args.ds)
    except KeyError as error:  # an unknown version: KeyError's str() would quote the message
        raise JobError(error.args[0]) from error
    except ValueError as error:
        raise JobError(str(error)) from error
