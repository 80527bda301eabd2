"""Rows that landed in days a version has already trained on, found from the Delta log.

A daily run trains the partitions after its parent's window. Rows that land later in a day the
parent already trained (a late file from the platform, a backfill) would never be trained on,
and nothing would say so. The parent records the table version it read (``table_version`` in
the registry); comparing the files of ``request_logs`` at that version with those at the
version pinned now gives, for every day up to the parent's ``window_end``:

* **late files**: added since, in a day where no file was removed. The new run trains them once,
  with its own window (:meth:`dnr.data.window.Window.open` ``extra_files``), and records their
  rows (``rows_late`` in the registry). Its own table version then covers them, so the run after
  it does not see them again.
* **rewritten days**: a day where files were removed since (a ``DELETE``, an ``OPTIMIZE``, an
  overwrite of the day). Its new files hold rows already trained on, changed or not, so none of
  them is trained again; the run reports the day, with the files and rows removed and added.

Only the Delta log is read (the add actions of two versions), never a data file. A parent whose
table version is no longer in the log (log retention) cannot be compared: the run says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from dnr.schemas import REQUEST_LOGS
from dnr.storage import Lake

C = REQUEST_LOGS.col


@dataclass(frozen=True)
class LateData:
    """What changed in the trained days between the parent's table version and the pinned one."""

    since_version: int
    version: int
    files: tuple[str, ...] = ()
    """URIs of the late files (appended to trained days), to train with the new window."""
    file_rows: tuple[int, ...] = ()
    """rows of each late file by its Delta statistics"""
    days: tuple[str, ...] = ()
    """the days the late files belong to"""
    rewritten: dict[str, dict[str, int]] = field(default_factory=dict)
    """day -> {files_removed, rows_removed, files_added, rows_added} for each rewritten day"""
    note: str | None = None
    """why nothing could be compared (the parent's version has left the log), else None"""

    @property
    def rows(self) -> int:
        return sum(self.file_rows)

    def describe(self) -> str:
        """One line for the job's console: late rows trained, rewritten days reported."""
        if self.note:
            return self.note
        parts = []
        if self.files:
            parts.append(f"{self.rows:,} late row(s) in {len(self.files)} file(s) of already-trained "
                         f"day(s) {', '.join(self.days)} (added after table v{self.since_version}): "
                         "trained once, with this window")
        for day, n in sorted(self.rewritten.items()):
            parts.append(f"day {day} was rewritten after table v{self.since_version} ({n['files_removed']} "
                         f"file(s), {n['rows_removed']:,} rows removed; {n['files_added']} file(s), "
                         f"{n['rows_added']:,} rows added): not trained again")
        return "; ".join(parts)


def _files(lake: Lake, version: int, through_day: str) -> dict[str, tuple[str, int]]:
    """path (relative to the table) -> (day, rows) of every file of a day <= ``through_day``."""
    from deltalake import DeltaTable

    table = DeltaTable(lake.table_uri("request_logs"), version=version, storage_options=lake.storage_options())
    adds = pa.table(table.get_add_actions(flatten=True))
    if not adds.num_rows:
        return {}
    paths, days = adds.column("path").to_pylist(), adds.column(f"partition.{C.ds}").to_pylist()
    rows = adds.column("num_records").to_pylist()
    return {p: (d, int(n or 0)) for p, d, n in zip(paths, days, rows) if d is not None and d <= through_day}


def find_late_data(lake: Lake, since_version: int | None, through_day: str | None, version: int) -> LateData:
    """The late files and rewritten days of the days up to ``through_day`` between table versions
    ``since_version`` (the parent's) and ``version`` (pinned by this run)."""
    from deltalake.exceptions import DeltaError

    if since_version is None or through_day is None or since_version >= version:
        return LateData(since_version=since_version or version, version=version)
    try:
        before = _files(lake, since_version, through_day)
    except (DeltaError, OSError) as error:
        return LateData(since_version=since_version, version=version, note=(
            f"late rows not checked: table v{since_version}, which the parent trained at, cannot be "
            f"read from the Delta log any more ({str(error).splitlines()[0][:120]})"))
    now = _files(lake, version, through_day)
    added = {p: v for p, v in now.items() if p not in before}
    removed = {p: v for p, v in before.items() if p not in now}
    rewritten: dict[str, dict[str, int]] = {}
    for files, kind in ((removed, "removed"), (added, "added")):
        for day, rows in files.values():
            if kind == "removed" or day in rewritten:
                n = rewritten.setdefault(day, dict(files_removed=0, rows_removed=0, files_added=0, rows_added=0))
                n[f"files_{kind}"] += 1
                n[f"rows_{kind}"] += rows
    late = sorted((p, day, rows) for p, (day, rows) in added.items() if day not in rewritten)
    uri = lake.table_uri("request_logs")
    return LateData(since_version=since_version, version=version,
                    files=tuple(f"{uri}/{p}" for p, _, _ in late), file_rows=tuple(r for _, _, r in late),
                    days=tuple(sorted({d for _, d, _ in late})), rewritten=rewritten)
