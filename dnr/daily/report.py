"""What a daily run prints at its end and writes with ``--json``."""

from __future__ import annotations

import json
from dataclasses import asdict

from dnr.daily.run import DailyResult
from dnr.storage import Lake


def summary_table(result: DailyResult, lake: Lake) -> str:
    """The short table printed at the end of the job."""
    rows = [("status", result.status), ("version", result.version or "-"),
            ("parent", result.parent_version or "(cold start)"), ("ds (held out)", result.ds)]
    if result.window:
        rows.append(("window", f"{result.window[0]} .. {result.window[1]} (table v{result.table_version})"))
    if result.window_capped:
        rows.append(("window capped", result.window_capped))
    if result.late_data:
        rows.append(("late data", result.late_data))
    if result.status == "no_requests":
        rows.append(("rows read", "0: the window's days landed empty; nothing was trained or registered"))
    if result.status == "trained":
        rows += [("rows read", f"{result.rows_read:,}" + (f" ({result.rows_late:,} late)" if result.rows_late else "")),
                 ("quarantined", f"{result.rows_quarantined:,} {result.quarantine_reasons or ''}"),
                 ("global step", str(result.global_step))]
        if result.capped:
            rows.append(("capped", result.capped))
        elif result.requests_left_out:
            rows.append(("left out", f"{result.requests_left_out} request(s) per epoch by the "
                                     "workers' equal split"))
        rows += [(k.removeprefix("train/"), f"{v:.4f}") for k, v in sorted(result.metrics.items())
                 if k.startswith("train/loss")]
        if "valid/registered" in result.metrics:
            m = result.metrics
            how = "stopped early" if m.get("train/stopped_early") else "ran every epoch"
            rows.append(("validation", f"{result.rows_holdout:,} held-out requests; registered step "
                                       f"{m['global_step']:.0f} of {m['train/last_global_step']:.0f} "
                                       f"(best score {m['valid/registered']:.4f}, "
                                       f"{len(m.get('valid/curve', []))} evaluations, {how})"))
        phases = ", ".join(f"{k} {v:.0f}s" for k, v in (result.phases or {}).items())
        rows += [("time", f"{result.seconds:.0f}s ({phases})"), ("checkpoint", result.checkpoint_uri),
                 ("tensorboard", f"tensorboard --logdir {result.tensorboard_uri}")]
    if result.replay_decision:
        rows += [("replay decision", f"{result.replay_decision}"
                  + (f" (registry: {result.registry_action})" if result.registry_action else "")),
                 ("replay report", f"{result.replay_report_uri}/report.md")]
    elif result.replay_note:
        rows.append(("replay", f"skipped: {result.replay_note}"))
    rows.append(("next", f"when the next day has landed: python jobs/train_daily.py --lake {lake.root}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def result_json(result: DailyResult) -> str:
    return json.dumps(asdict(result), sort_keys=True, default=str)
