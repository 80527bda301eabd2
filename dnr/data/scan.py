"""The validation pass over a window: one Ray Data execution over the full rows.

Each block is validated by the task that holds it. Its bad rows become one Parquet file that
the task writes inside the ``quarantine`` table's directory, not yet part of the table. The task
returns one summary row: rows per source file, bad rows, reasons, the staged file. The driver
receives the summaries only (one row per block, never a request), checks the rows read from each
file against its Delta statistics, and adds every staged file to ``quarantine`` in one commit.

A retried task writes a new file under a new name. Only the files named by the summaries the
driver received are committed; a retried task's first file is never referenced by the table
(``VACUUM`` removes such files).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dnr.data import delta_files, validate
from dnr.schemas import QUARANTINE, REQUEST_LOGS
from dnr.storage import Lake

#: one row per block, what a scan task sends back to the driver
SUMMARY = pa.schema([
    ("files", pa.list_(pa.string())), ("file_rows", pa.list_(pa.int64())),
    ("bad", pa.int64()), ("reasons", pa.string()),
    ("staged", pa.string()), ("staged_bytes", pa.int64()), ("holdout", pa.int64()),
    ("excluded", pa.int64()),
])


class CountMismatchError(RuntimeError):
    """Rows read from a data file differ from what its Delta statistics say it holds."""


class UnreadableFileError(RuntimeError):
    """A data file of the window is not readable Parquet (truncated, overwritten, missing)."""


def unreadable_files(lake: Lake, files: tuple[str, ...]) -> list[tuple[str, str]]:
    """(file, reason) for every file of ``files`` that cannot be read. Footers first (one small
    read per file: truncated, overwritten, missing); when every footer reads, each file whole,
    one at a time, with its page checksums verified (bytes changed inside a page)."""
    fs = lake.filesystem()

    def failures(read) -> list[tuple[str, str]]:
        broken = []
        for uri in files:
            try:
                read(lake.fs_path(uri))
            except (OSError, pa.ArrowException) as error:
                broken.append((uri, str(error).splitlines()[0][:200]))
        return broken

    return (failures(lambda path: pq.read_metadata(path, filesystem=fs))
            or failures(lambda path: pq.read_table(path, filesystem=fs, partitioning=None,
                                                   page_checksum_verification=True)))


def check_file_schemas(lake: Lake, files: tuple[str, ...], where: str, threads: int = 16) -> None:
    """Raise :class:`~dnr.data.validate.SchemaError` naming each data file whose own schema lacks a
    required column or types one otherwise than the contract.

    The table's schema is checked when a window opens, but a platform writer may commit a file
    without a column (Delta readers then see nulls, and Ray Data sees nulls or no column, by file
    order). One footer read per file, ``threads`` at a time; a footer that cannot be read is left
    to the read, which names unreadable files (:func:`unreadable_files`).
    """
    from concurrent.futures import ThreadPoolExecutor

    fs = lake.filesystem()

    def problems(uri: str) -> list[str]:
        try:
            schema = pq.read_schema(lake.fs_path(uri), filesystem=fs)
        except (OSError, pa.ArrowException):
            return []
        return validate.schema_problems(schema, partition_columns=(REQUEST_LOGS.col.ds,))

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(files)))) as pool:
        found = [(uri, p) for uri, p in zip(files, pool.map(problems, files)) if p]
    if found:
        listed = "; ".join(f"{uri}: {', '.join(p)}" for uri, p in found[:5])
        raise validate.SchemaError(
            f"{where}: {len(found)} data file(s) do not match dnr/schema_files/request_logs.json ({listed}). "
            "Re-land those files with every required column, then re-run. Nothing was trained.")


def contract_columns(batch: pa.Table) -> pa.Table:
    """The contract's columns of a read block, in its order and plain types (Ray parses ``ds``
    from the path; :func:`dnr.data.validate.conform`)."""
    return validate.conform(batch)


def scan_block(batch: pa.Table, lake_root: str, max_list_len: int, duplicate_ids: np.ndarray,
               source_table: str, source_version: int, run_id: str, holdout_fraction: float = 0.0,
               exclude_ids: np.ndarray | None = None) -> pa.Table:
    """Validate one block read with ``include_paths``; stage its bad rows; return its summary
    (with the kept rows that fall in the validation hold-out, and those whose id hash is in
    ``exclude_ids``, counted)."""
    if batch.num_rows == 0:  # an empty file's block may carry no column at all: nothing to judge
        return SUMMARY.empty_table()
    per_file = pc.value_counts(batch.column("path")).to_pylist()
    rows = contract_columns(batch)
    kept, bad, reasons = validate.split(rows, max_list_len, duplicate_ids)
    ids = kept.column(REQUEST_LOGS.col.request_id)
    holdout = int(validate.holdout_mask(ids, holdout_fraction).sum())
    excluded = int(np.isin(validate.hash_request_ids(ids), exclude_ids).sum()) if exclude_ids is not None \
        and len(exclude_ids) else 0
    staged, staged_bytes = None, 0
    if bad.num_rows:
        staged, staged_bytes = _stage(lake_root, validate.quarantine_rows(
            bad, reasons, source_table, source_version, run_id))
    counted = Counter(r for joined in reasons for r in joined.split(";"))
    return pa.table({
        "files": [[f["values"] for f in per_file]], "file_rows": [[f["counts"] for f in per_file]],
        "bad": [bad.num_rows], "reasons": [json.dumps(dict(counted), sort_keys=True)],
        "staged": [staged], "staged_bytes": [staged_bytes], "holdout": [holdout], "excluded": [excluded],
    }, schema=SUMMARY)


def _stage(lake_root: str, rows: pa.Table) -> tuple[str, int]:
    """Write quarantine rows as a new Parquet file in the table's directory: (name, bytes)."""
    written = delta_files.write_files(rows, lake_root, "quarantine").to_pylist()[0]
    return written["path"], written["size"]


@dataclass
class ScanTotals:
    """The summaries of a scan, added up on the driver: O(files + blocks), never O(requests)."""

    file_rows: dict[str, int] = field(default_factory=dict)
    bad: int = 0
    reasons: Counter = field(default_factory=Counter)
    staged: list[tuple[str, int, int]] = field(default_factory=list)
    """(file name, bytes, rows) of every staged quarantine file."""
    holdout: int = 0
    """Kept rows in the validation hold-out."""
    excluded: int = 0
    """Kept rows whose id is excluded (the replay's ids of the training window)."""

    @property
    def rows_read(self) -> int:
        return sum(self.file_rows.values())

    def add(self, summary: pa.Table) -> None:
        for files, counts, bad, reasons, staged, size, holdout, excluded in zip(
                *(summary.column(n).to_pylist() for n in SUMMARY.names)):
            for path, count in zip(files, counts):
                self.file_rows[path] = self.file_rows.get(path, 0) + count
            self.bad += bad
            self.holdout += holdout
            self.excluded += excluded
            self.reasons.update(json.loads(reasons))
            if staged:
                self.staged.append((staged, size, bad))

    def check(self, expected: dict[str, int], table: str, version: int) -> None:
        """Raise :class:`CountMismatchError` naming every file whose rows differ from its stats."""
        wrong = [(path, rows, self.file_rows.get(path, 0)) for path, rows in expected.items()
                 if self.file_rows.get(path, 0) != rows]
        wrong += [(path, 0, rows) for path, rows in self.file_rows.items() if path not in expected]
        if wrong:
            listed = "; ".join(f"{p}: statistics {e:,} rows, read {r:,}" for p, e, r in wrong[:5])
            raise CountMismatchError(
                f"{table} at version {version}: {len(wrong)} data file(s) do not hold the rows the "
                f"Delta log records ({listed}). A file was changed after it was committed; restore "
                "it or re-land its day, then re-run. Nothing was trained.")


def commit_quarantine(lake: Lake, staged: list[tuple[str, int, int]], run_id: str) -> None:
    """Add the staged files to ``quarantine`` in one Delta commit (creating the table if needed)."""
    written = [{"path": name, "size": size, "rows": rows, "partition": None} for name, size, rows in staged]
    delta_files.commit_files(lake, "quarantine", QUARANTINE, written,
                             metadata={"run_id": run_id, "written_by": "dnr.data.scan"})
