"""Offline replay evaluation of a candidate model on a held-out day, and the promotion gate.

    python jobs/replay_eval.py --candidate latest --baseline production            # embedded Ray, ./lake
    python jobs/replay_eval.py --lake s3://bucket/lake --candidate dnr-v0007 --ds 2026-05-04 --promote
    ray job submit --working-dir . -- python jobs/replay_eval.py --lake s3://bucket/lake --promote
    python jobs/replay_eval.py gate.tolerance=0.01 gate.min_requests=1000      # gate overrides

Scores every logged request of day --ds (default: the day after the candidate's training
window) with the candidate, the baseline, the retriever order and (synthetic data) the oracle;
prints the comparison and the gate's decision; writes the report with plots and one row of
replay_reports. With --promote the registry follows the decision (promote or reject).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dnr.config import load_config
from dnr.evaluation.replay import comparison_table, run_replay
from dnr.runtime import start_ray
from dnr.storage import Lake


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = list(args.overrides) + ([f"train.model_name={args.model}"] if args.model else [])
    cfg = load_config(args.config, overrides)
    start_ray(args.num_cpus, verbose=args.verbose)
    result = run_replay(Lake(args.lake), cfg, candidate=args.candidate, baseline=args.baseline,
                        ds=args.ds, promote=args.promote)
    print(f"\n[replay] {result.report_id} ({result.seconds:.0f}s)\n" + comparison_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"report_id": result.report_id, "decision": result.decision, "reasons": result.reasons,
             "registry_action": result.registry_action, "report_uri": result.report_uri,
             "candidate": result.candidate, "baseline": result.baseline, "ds": result.ds,
             "metrics": result.summary.metrics}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
