"""Export a registered reranker for serving, then check the artifact against the eager model
(``dnr export``, ``python jobs/export_model.py``).

    dnr export --lake ./lake --version production
    dnr export --lake s3://bucket/lake --version dnr-v0003 --out s3://bucket/serving/dnr-v0003

Writes reranker.pt2 and manifest.json (default ``<lake>/serving/<version>/``), loads them back
through the safe loader (sha256 and content checks) and prints the largest |logit difference|
between the artifact and the eager model on a batch: rows of the newest request_logs partition
when the lake has some, else synthetic requests.

A refusal is one line on stderr (--verbose adds its traceback). Exit statuses (dnr.runtime):
0 exported and checked; 2 bad argument; 66 the lake is not a directory or has no such version.
"""

from __future__ import annotations

import argparse
import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dnr.config import DataConfig
from dnr.runtime import EXIT_NO_INPUT, JobArgumentParser, JobError, check_lake, refuse
from dnr.storage import Lake

PARITY_ROWS = 256
"""Rows of the lake's newest partition compared; synthetic requests are slower to make, so fewer."""
SYNTHETIC_ROWS = 64


def parse_args(argv=None, prog: str | None = None) -> argparse.Namespace:
    p = JobArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", default="./lake", help="lake root: local directory or s3://bucket/prefix")
    p.add_argument("--version", required=True, help="registry version, or 'production'")
    p.add_argument("--model", default="dnr", help="model line whose production version --version=production means")
    p.add_argument("--out", default=None, help="artifact directory (default <lake>/serving/<version>/)")
    p.add_argument("--verbose", action="store_true", help="show the traceback of a refusal")
    return p.parse_args(argv)


def parity_rows(lake: Lake, data_cfg: DataConfig) -> tuple[pa.Table, str]:
    """Up to PARITY_ROWS valid rows of the newest request_logs partition, else synthetic ones."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    from dnr.data import validate
    from dnr.datasets.synth import make_requests
    from dnr.datasets.synth_world import WorldConfig

    try:
        table = DeltaTable(lake.table_uri("request_logs"), storage_options=lake.storage_options())
        adds = pa.table(table.get_add_actions(flatten=True))
        newest = max(adds.column("partition.ds").to_pylist()) if adds.num_rows else None
    except TableNotFoundError:
        newest = None
    if newest is not None:
        rows = table.to_pyarrow_dataset().filter(pc.field("ds") == newest).head(PARITY_ROWS)
        kept, _, _ = validate.split(rows, data_cfg.max_list_len)
        if kept.num_rows:
            return kept, f"{kept.num_rows} rows of request_logs ds={newest}"
    rows = make_requests(WorldConfig(list_len=data_cfg.max_list_len), dt.date(2026, 1, 1), np.arange(SYNTHETIC_ROWS))
    return rows, f"{rows.num_rows} synthetic requests"


def main(argv=None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    try:
        return _export(args)
    except JobError as error:
        return refuse("export", error, args.verbose)


def _export(args: argparse.Namespace) -> int:
    try:
        lake = Lake(args.lake)
    except ValueError as error:
        raise JobError(str(error)) from error
    check_lake(lake)
    from dnr.serving import (
        export_version,
        load_artifact,
        load_version,
        max_abs_difference,
    )

    try:
        uri = export_version(lake, args.version, args.out, model_name=args.model)
    except KeyError as error:  # no such version, or no production one (str() would quote it)
        raise JobError(error.args[0], EXIT_NO_INPUT) from error
    print(f"[export] wrote {uri}")

    version, cfg, reranker = load_version(lake, args.version, args.model)
    serving = load_artifact(uri)  # what a serving process does: read it back from the lake
    rows, source = parity_rows(lake, cfg.data)
    diff = max_abs_difference(serving, reranker, rows)
    print(f"[export] {version} ({cfg.model.family}, score_mode={cfg.model.score_mode}): artifact vs eager "
          f"on {source}: max |logit difference| = {diff:.3g}")
    return 0
