"""One registry row (:class:`ModelVersion`), its statuses, and the registry's errors."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, fields

STATUSES = ("candidate", "production", "retired", "rejected")


@dataclass(frozen=True)
class ModelVersion:
    """One registry row (columns documented in dnr/schema_files/model_registry.json)."""

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
    rows_late: int | None = None
    global_step: int | None = None
    run_name: str | None = None
    metrics_json: str | None = None
    promoted_at: dt.datetime | None = None
    retired_at: dt.datetime | None = None
    status_reason: str | None = None
    report_id: str | None = None

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"model version {self.version}: status {self.status!r} not in {STATUSES}")


_FIELDS = frozenset(f.name for f in fields(ModelVersion))


#: the replay gate's checks that a sane model can fail (dnr.evaluation.gate); any other failed
#: check (finite_scores, score_spread, not_tied) means the model itself is broken
QUALITY_CHECKS = ("requests", "primary", "retriever_floor")
_GATE_REJECTION = re.compile(r"^rejected by replay report \S+: failed (?P<checks>.+)$")


def rejected_on_quality_alone(row: ModelVersion) -> bool:
    """Rejected by the replay gate, and every check it failed is a quality check."""
    match = _GATE_REJECTION.match(row.status_reason or "")
    if row.report_id is None or match is None:
        return False
    failed = [c.strip() for c in match["checks"].split(",")]
    return all(c in QUALITY_CHECKS or c.startswith("guardrail:") for c in failed)


class RegistryError(ValueError):
    """A lifecycle change the registry refuses; the message names the version and why."""


class VersionExistsError(RegistryError):
    """``register`` of a version number that is taken: pick ``next_version`` and register again."""


class ProductionChangedError(RegistryError):
    """``promote(..., expected_production=X)`` found another production than X."""

    def __init__(self, message: str, expected: str | None, current: str | None):
        super().__init__(message)
        self.expected, self.current = expected, current


class AlreadyProductionError(RegistryError):
    """``promote`` of the version that is production already, found on the first read or, after
    losing a commit race to an identical promotion, on the retry. Nothing was committed: this
    promotion's reason is not recorded, and the caller must not report it as done."""

    def __init__(self, message: str, production: ModelVersion):
        super().__init__(message)
        self.production = production
        """the production row as committed, with the winner's ``status_reason``"""


class RegistryCommitError(RuntimeError):
    """A registry commit failed for a reason other than a concurrent commit (storage, network):
    the message names the table, the change and what to check."""
