"""Model versions in the lake's ``model_registry`` Delta table.

One row per version, appended once its checkpoint is complete. The daily job asks the registry
for the parent to warm-start from (the production model, else the newest candidate) and
whether an equivalent version already exists (same parent, same window, same table version),
which makes re-running a day a no-op.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict, dataclass, fields

import pyarrow as pa

from dnr.schemas import MODEL_REGISTRY
from dnr.storage import Lake

R = MODEL_REGISTRY.col
STATUSES = ("candidate", "production", "retired", "rejected")


@dataclass(frozen=True)
class ModelVersion:
    """One registry row (columns documented in schemas/model_registry.json)."""

    version: str
    model_name: str
    family: str
    status: str
    checkpoint_uri: str
    config_json: str
    created_at: dt.datetime
    parent_version: str | None = None
    window_start: str | None = None
    window_end: str | None = None
    table_version: int | None = None
    rows_read: int | None = None
    rows_quarantined: int | None = None
    global_step: int | None = None
    run_name: str | None = None
    metrics_json: str | None = None

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"model version {self.version}: status {self.status!r} not in {STATUSES}")


def _commit_conflict(exc: Exception) -> bool:
    from deltalake.exceptions import CommitFailedError

    return isinstance(exc, CommitFailedError) or "conflict" in str(exc).lower()


class Registry:
    """``Registry(lake).parent_for("dnr")``; rows are read fresh on every call."""

    def __init__(self, lake: Lake):
        self.lake = lake
        self.uri = lake.table_uri("model_registry")

    def versions(self, model_name: str | None = None) -> list[ModelVersion]:
        """All versions (of one model line), oldest first."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            table = DeltaTable(self.uri, storage_options=self.lake.storage_options()).to_pyarrow_table()
        except TableNotFoundError:
            return []
        names = {f.name for f in fields(ModelVersion)}
        rows = [ModelVersion(**{k: v for k, v in row.items() if k in names}) for row in table.to_pylist()]
        rows = [r for r in rows if model_name is None or r.model_name == model_name]
        return sorted(rows, key=lambda r: (r.created_at, r.version))

    def get(self, version: str) -> ModelVersion:
        for row in self.versions():
            if row.version == version:
                return row
        raise KeyError(f"no model version {version!r} in {self.uri}")

    def production(self, model_name: str) -> ModelVersion | None:
        prod = [r for r in self.versions(model_name) if r.status == "production"]
        return prod[-1] if prod else None

    def parent_for(self, model_name: str) -> ModelVersion | None:
        """The production version, else the newest candidate, else None (cold start)."""
        versions = self.versions(model_name)
        for status in ("production", "candidate"):
            matching = [r for r in versions if r.status == status]
            if matching:
                return matching[-1]
        return None

    def find_equivalent(self, model_name: str, parent_version: str | None, window_end: str,
                        table_version: int) -> ModelVersion | None:
        """A version already trained from the same parent on the same data, if any."""
        for row in reversed(self.versions(model_name)):
            if (row.parent_version, row.window_end, row.table_version) == (
                    parent_version, window_end, table_version):
                return row
        return None

    def next_version(self, model_name: str) -> str:
        numbers = [int(r.version.rsplit("-v", 1)[1]) for r in self.versions(model_name)
                   if r.version.rsplit("-v", 1)[-1].isdigit()]
        return f"{model_name}-v{max(numbers, default=0) + 1:04d}"

    def register(self, version: ModelVersion, retries: int = 5) -> None:
        """Append one row; concurrent appends are retried on Delta commit conflicts."""
        from deltalake import write_deltalake

        table = pa.Table.from_pylist([asdict(version)], schema=MODEL_REGISTRY.arrow)
        for attempt in range(retries + 1):
            try:
                write_deltalake(self.uri, table, mode="append",
                                storage_options=self.lake.storage_options())
                return
            except Exception as exc:  # noqa: BLE001 - re-raised unless a commit conflict
                if attempt == retries or not _commit_conflict(exc):
                    raise
                time.sleep(0.2 * (attempt + 1))
