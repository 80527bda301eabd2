"""Read the model registry from a shell, and its text views (:func:`show`, :func:`listing`).

    python -m dnr.registry --lake ./lake list [--model dnr]
    python -m dnr.registry --lake ./lake show dnr-v0003
    python -m dnr.registry --lake s3://bucket/lake production [--model dnr]
    python -m dnr.registry --lake ./lake list --json     # JSON lines, for scripts

A script that needs the registry should read it through ``--json`` (this process exits cleanly:
see :func:`dnr.runtime.exit_process`) or end with ``exit_process``. Promotion and rollback are a job: ``jobs/promote.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys

from dnr.registry import ModelVersion, Registry
from dnr.storage import Lake


def _time(value: dt.datetime | None) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def _number(value: int | None) -> str:
    return f"{value:,}" if value is not None else "-"


def _metrics(metrics_json: str | None) -> str:
    if not metrics_json:
        return "-"
    items = json.loads(metrics_json).items()
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(items))


def describe_version(row: ModelVersion, lineage: list[ModelVersion]) -> str:
    """The ``show`` block; ``lineage`` is ``Registry.lineage(row.version)``."""
    chain = " <- ".join(f"{v.version} ({v.status})" for v in lineage)
    root = lineage[-1].parent_version
    chain += f" <- {root} (not in the registry)" if root else " <- (cold start)"
    window = (f"{row.window_start} .. {row.window_end}" if row.window_end else "-")
    config = json.dumps(json.loads(row.config_json), separators=(",", ":"), sort_keys=True)
    lines = [
        ("status", row.status),
        ("model", f"{row.model_name} (family {row.family})"),
        ("lineage", chain),
        ("data window", f"{window}, request_logs table version {_number(row.table_version)}"),
        ("rows", f"{_number(row.rows_read)} read, {_number(row.rows_quarantined)} quarantined"),
        ("global step", _number(row.global_step)),
        ("checkpoint", row.checkpoint_uri),
        ("run", row.run_name or "-"),
        ("created", _time(row.created_at)),
        ("promoted", _time(row.promoted_at)),
        ("retired", _time(row.retired_at)),
        ("status reason", row.status_reason or "-"),
        ("replay report", row.report_id or "-"),
        ("config", config),
        ("metrics", _metrics(row.metrics_json)),
    ]
    width = max(len(k) for k, _ in lines)
    return "\n".join([row.version] + [f"  {k:<{width}}  {v}" for k, v in lines])


def versions_table(rows: list[ModelVersion]) -> str:
    """One line per version, aligned; the ``list`` view."""
    header = ("VERSION", "STATUS", "PARENT", "WINDOW", "TABLE_V", "STEP", "CREATED", "PROMOTED",
              "RETIRED")
    body = [(r.version, r.status, r.parent_version or "-",
             f"{r.window_start}..{r.window_end}" if r.window_end else "-",
             _number(r.table_version), _number(r.global_step), _time(r.created_at),
             _time(r.promoted_at), _time(r.retired_at)) for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in [header, *body])


def show(registry: Registry, version: str) -> str:
    """A human-readable block: status, lineage, data, checkpoint, times, config, metrics."""
    return describe_version(registry.get(version), registry.lineage(version))


def listing(registry: Registry, model_name: str | None = None) -> str:
    """Every version (of one model line) as an aligned text table, oldest first."""
    return versions_table(registry.versions(model_name))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dnr.registry", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", default="./lake", help="lake root: local directory or s3://bucket/prefix")
    sub = p.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="every version, oldest first")
    listing.add_argument("--model", default=None, help="only this model line")
    show = sub.add_parser("show", help="one version: lineage, data, checkpoint, config, metrics")
    show.add_argument("version")
    prod = sub.add_parser("production", help="the production version of a model line")
    prod.add_argument("--model", default="dnr", help="model line (default: dnr)")
    for command in (listing, show, prod):
        command.add_argument("--json", action="store_true",
                             help="the registry rows as JSON lines, one per version, for scripts")
    return p.parse_args(argv)


def json_lines(rows: list[ModelVersion]) -> str:
    """One JSON object per version (every registry column; times in ISO 8601, UTC)."""
    return "\n".join(json.dumps(dataclasses.asdict(r), default=lambda t: t.isoformat(), sort_keys=True)
                     for r in rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    registry = Registry(Lake(args.lake))
    if args.command == "list":
        rows = registry.versions(args.model)
        if args.json:
            if rows:
                print(json_lines(rows))
        else:
            print(versions_table(rows) if rows else f"no model versions in {registry.uri}")
    elif args.command == "show":
        try:
            print(json_lines([registry.get(args.version)]) if args.json else show(registry, args.version))
        except KeyError as exc:
            print(exc.args[0], file=sys.stderr)
            return 1
    else:
        row = registry.production(args.model)
        if row is None:
            print(f"{args.model} has no production version in {registry.uri}", file=sys.stderr)
            return 1
        print(json_lines([row]) if args.json else show(registry, row.version))
    return 0
