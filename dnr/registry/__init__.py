"""Model versions in the lake's ``model_registry`` Delta table, and their lifecycle.

One row per version, appended once its checkpoint is complete. The daily job asks the registry
for the parent to warm-start from (the production model, else the newest candidate) and
whether an equivalent version already exists (same parent, same window, same table version),
which makes re-running a day a no-op. The promotion gate and operators change statuses::

    candidate  --promote-->   production  the previous production, if any, becomes retired
    retired    --promote-->   production  (by hand) likewise
    candidate  --reject--->   rejected    the gate refused it
    production --rollback-->  rejected    the newest retired version becomes production again

each in one commit, so a model line never has two production rows at any table version, and
never none again once it has had one.

Concurrency. A daily run may register while an operator promotes. Every write goes through
``Registry._commit``: read a snapshot, check the invariants on it (version unique, at most one
production per model line), and commit from that snapshot with a Delta ``txn`` action for the
app id ``APP_ID``. delta-rs refuses a commit (``CommitFailedError``, "Concurrent transaction
failed") when a commit made after its snapshot carries the same app id, so two registry writes
are never both committed from one snapshot; the loser re-reads, re-checks and retries. Row-level
``update``/``merge`` alone would not do: with deltalake 1.6.6 two ``update``s promoting two
candidates that sit in different files both commit and leave two production rows. Status
changes also rewrite the whole (small) table, which alone makes two of them conflict
("a concurrent transaction deleted data this operation read"). On top of that, a gate's
promotion names the production it was evaluated against (``expected_production``) and is
refused if production has moved since. Promoting the version that is production already is
refused too (``AlreadyProductionError``): when two identical promotions race, the loser's retry
finds the winner's commit, and reporting success would drop its reason silently. Two identical
rollbacks likewise: the loser's retry finds production moved and refuses.

Any process may use it (the daily driver, the replay, an operator's ``jobs/promote.py``); it
touches only the ``model_registry`` table of the lake, never Ray.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import random
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

import pyarrow as pa

from dnr.registry.versions import (_FIELDS, QUALITY_CHECKS, STATUSES,  # noqa: F401 - re-exported
                                   AlreadyProductionError, ModelVersion, ProductionChangedError,
                                   RegistryCommitError, RegistryError, VersionExistsError,
                                   rejected_on_quality_alone)
from dnr.schemas import MODEL_REGISTRY
from dnr.storage import Lake

R = MODEL_REGISTRY.col
#: app id of the Delta ``txn`` action every registry commit carries (see the module docstring)
APP_ID = "dnr.model_registry"
#: commitInfo key holding how many conflicting attempts preceded a registry commit (0: none)
COMMIT_ATTEMPT_KEY = "dnrRegistryAttempt"


ANY = object()
"""``promote``'s default ``expected_production``: promote whatever production is now."""


def _commit_conflict(exc: Exception) -> bool:
    from deltalake.exceptions import CommitFailedError

    return isinstance(exc, CommitFailedError) or "conflict" in str(exc).lower()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, as in some containers
        return os.environ.get("USER", "unknown")


@dataclass(frozen=True)
class _Change:
    """What one registry commit does: append new rows, or replace some rows (by version)."""

    append: tuple[ModelVersion, ...] = ()
    replace: tuple[ModelVersion, ...] = ()


class Registry:
    """``Registry(lake).parent_for("dnr")``; rows are read fresh on every call."""

    def __init__(self, lake: Lake, retries: int = 8):
        self.lake = lake
        self.uri = lake.table_uri("model_registry")
        self.retries = retries
        """commits retried after a conflicting concurrent registry commit, re-checked each time."""

    # -- read side -----------------------------------------------------------------------------

    def _open(self, create: bool = False):
        """The registry DeltaTable at its newest version; None if it does not exist (yet)."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        opts = self.lake.storage_options()
        try:
            return DeltaTable(self.uri, storage_options=opts)
        except TableNotFoundError:
            if not create:
                return None
        # an empty table first, so every data commit has a snapshot to be conflict-checked
        # against; two racing creations both succeed (the second is committed as version 1)
        DeltaTable.create(self.uri, MODEL_REGISTRY.delta, mode="ignore", storage_options=opts)
        return DeltaTable(self.uri, storage_options=opts)

    def _rows(self, raw: pa.Table) -> list[ModelVersion]:
        """The rows as stored, with checkpoint locations resolved against this lake's root."""
        rows = [ModelVersion(**{k: v for k, v in row.items() if k in _FIELDS}) for row in raw.to_pylist()]
        rows = [replace(r, checkpoint_uri=self.lake.resolve(r.checkpoint_uri)) for r in rows]
        return sorted(rows, key=lambda r: (r.created_at, r.version))

    def _stored(self, rows) -> list[dict]:
        """Rows as written: checkpoint locations inside the lake relative to its root."""
        return [asdict(replace(r, checkpoint_uri=self.lake.relative(r.checkpoint_uri))) for r in rows]

    def versions(self, model_name: str | None = None) -> list[ModelVersion]:
        """All versions (of one model line), oldest first."""
        table = self._open()
        rows = self._rows(table.to_pyarrow_table()) if table is not None else []
        return [r for r in rows if model_name is None or r.model_name == model_name]

    def get(self, version: str) -> ModelVersion:
        for row in self.versions():
            if row.version == version:
                return row
        raise KeyError(f"no model version {version!r} in {self.uri}")

    def production(self, model_name: str) -> ModelVersion | None:
        prod = [r for r in self.versions(model_name) if r.status == "production"]
        return prod[-1] if prod else None

    def parent_for(self, model_name: str) -> ModelVersion | None:
        """The version the next daily run warm-starts from (README "The daily job"):

        1. the production version (the next window: the days since its window);
        2. else the newest candidate;
        3. else the newest version the replay gate rejected on quality alone (its scores were
           sane: finite, spread, not tied), so that a line with nothing in production keeps
           learning through rejections instead of starting cold on all the history;
        4. else None (cold start).

        A version rejected for a sanity check, rejected by a person, rolled back or retired is
        never a parent."""
        versions = self.versions(model_name)
        for status in ("production", "candidate"):
            matching = [r for r in versions if r.status == status]
            if matching:
                return matching[-1]
        learned = [r for r in versions if r.status == "rejected" and rejected_on_quality_alone(r)]
        return learned[-1] if learned else None

    def find_equivalent(self, model_name: str, parent_version: str | None, window_end: str,
                        table_version: int) -> ModelVersion | None:
        """A version already trained from the same parent on the same data, if any."""
        for row in reversed(self.versions(model_name)):
            if (row.parent_version, row.window_end, row.table_version) == (
                    parent_version, window_end, table_version):
                return row
        return None

    def next_version(self, model_name: str) -> str:
        """The next free number. Two writers may both get it: ``register`` then refuses the
        second with ``VersionExistsError`` and the caller asks again."""
        return self._next_number(self.versions(model_name), model_name)

    def lineage(self, version: str) -> list[ModelVersion]:
        """``version`` and its parents, newest first, back to the cold start (or to a parent
        the registry does not hold: ``lineage(v)[-1].parent_version`` is then not None)."""
        by_version = {r.version: r for r in self.versions()}
        if version not in by_version:
            raise KeyError(f"no model version {version!r} in {self.uri}")
        chain = [by_version[version]]
        while chain[-1].parent_version in by_version and len(chain) <= len(by_version):
            chain.append(by_version[chain[-1].parent_version])
        return chain

    # -- write side ----------------------------------------------------------------------------

    def register(self, version: ModelVersion, retries: int | None = None) -> ModelVersion:
        """Append one row. Refuses a version number that exists (``VersionExistsError``) and a
        second production row of a model line (use ``promote``); both checked on the snapshot
        the append is committed from."""

        def plan(rows: list[ModelVersion]) -> _Change:
            if any(r.version == version.version for r in rows):
                raise VersionExistsError(
                    f"model version {version.version} is already registered in {self.uri}; "
                    f"register it as {self._next_number(rows, version.model_name)} instead")
            prod = self._production_of(rows, version.model_name)
            if version.status == "production" and prod is not None:
                raise RegistryError(f"cannot register {version.version} as production: {prod.version} "
                                    f"is production of {version.model_name}; register a candidate "
                                    f"and promote it")
            return _Change(append=(version,))

        self._commit(f"register {version.version}", plan, retries)
        return version

    def promote(self, version: str, reason: str, report_id: str | None = None,
                by: str | None = None, expected_production: str | None | object = ANY) -> ModelVersion:
        """Make ``version`` (a candidate or retired version) production and retire the current
        production of its model line, in one commit. Returns the promoted row.

        ``expected_production`` (a version, or None for "no production yet") makes the commit a
        compare-and-swap: a gate that compared the candidate against production X passes X, and
        if production has moved meanwhile (a rollback, another promotion) nothing changes and
        :class:`ProductionChangedError` says so; the decision has to be made again.

        A ``version`` that is production already raises :class:`AlreadyProductionError` (nothing
        committed, ``reason`` not recorded), also when it became production while this call
        retried after a conflicting commit: the other promotion won, this one did nothing.
        """
        who = f"replay report {report_id}" if report_id else (by or _operator())

        def plan(rows: list[ModelVersion]) -> _Change:
            target = self._find(rows, version)
            if target.status == "production":
                raise AlreadyProductionError(
                    f"{version} is already production ({target.status_reason or 'no reason recorded'}); "
                    f"nothing changed, the reason {reason!r} is not recorded", production=target)
            if target.status not in ("candidate", "retired"):
                raise RegistryError(f"cannot promote {version}: it is {target.status} "
                                    f"({target.status_reason or 'no reason recorded'}); only "
                                    f"candidate or retired versions can be promoted")
            old = self._production_of(rows, target.model_name)
            current = old.version if old is not None else None
            if expected_production is not ANY and current != expected_production:
                raise ProductionChangedError(
                    f"cannot promote {version}: production of {target.model_name!r} is "
                    f"{current or 'none'}, not {expected_production or 'none'} as when it was "
                    f"evaluated ({old.status_reason if old is not None else 'no production row'}); "
                    f"evaluate it again against the new production",
                    expected=expected_production, current=current)
            now = _now()
            new = replace(target, status="production", promoted_at=now, retired_at=None,
                          status_reason=f"promoted by {who}: {reason}", report_id=report_id)
            changes = [new] if old is None else [new, replace(
                old, status="retired", retired_at=now, report_id=report_id,
                status_reason=f"retired by {who}: {version} promoted: {reason}")]
            return _Change(replace=tuple(changes))

        return self._commit(f"promote {version}", plan, reason=reason).replace[0]

    def reject(self, version: str, reason: str, report_id: str | None = None,
               by: str | None = None) -> ModelVersion:
        """Mark a candidate ``rejected`` (the gate refused it). Returns the rejected row."""
        who = f"replay report {report_id}" if report_id else (by or _operator())

        def plan(rows: list[ModelVersion]) -> _Change:
            target = self._find(rows, version)
            if target.status != "candidate":
                raise RegistryError(f"cannot reject {version}: it is {target.status}, not a candidate"
                                    + ("; use rollback to demote the production version"
                                       if target.status == "production" else ""))
            return _Change(replace=(replace(target, status="rejected", report_id=report_id,
                                            status_reason=f"rejected by {who}: {reason}"),))

        return self._commit(f"reject {version}", plan, reason=reason).replace[0]

    def rollback(self, model_name: str, reason: str,
                 by: str | None = None) -> tuple[ModelVersion, ModelVersion]:
        """Restore the most recently retired version of ``model_name`` to production and mark
        the current production ``rejected``, in one commit. Repeated rollbacks walk further back.
        Returns (restored, demoted)."""
        who = by or _operator()
        first_seen: list[str] = []  # the production this rollback was asked against

        def plan(rows: list[ModelVersion]) -> _Change:
            current = self._production_of(rows, model_name)
            if current is None:
                raise RegistryError(f"cannot roll back {model_name}: it has no production version")
            first_seen.append(current.version)
            if current.version != first_seen[0]:  # a retry after another commit: another rollback
                raise ProductionChangedError(   # or promotion won; going back once more is not asked
                    f"cannot roll back {model_name}: production moved from {first_seen[0]} to "
                    f"{current.version} while this rollback was committing (another rollback or "
                    f"promotion); nothing changed, the reason {reason!r} is not recorded. Run the "
                    "rollback again to go further back.", expected=first_seen[0], current=current.version)
            retired = [r for r in rows if r.model_name == model_name and r.status == "retired"]
            if not retired:
                raise RegistryError(f"cannot roll back {model_name}: no retired version to restore "
                                    f"({current.version} is production)")
            back = max(retired, key=lambda r: (r.retired_at or dt.datetime.min.replace(
                tzinfo=dt.timezone.utc), r.created_at))
            now = _now()
            return _Change(replace=(
                replace(back, status="production", promoted_at=now, retired_at=None, report_id=None,
                        status_reason=f"restored by {who} (rollback of {current.version}): {reason}"),
                replace(current, status="rejected", retired_at=now, report_id=None,
                        status_reason=f"rolled back by {who}: {reason}")))

        restored, demoted = self._commit(f"rollback {model_name}", plan, reason=reason).replace
        return restored, demoted

    # -- one commit ----------------------------------------------------------------------------

    @staticmethod
    def _find(rows: list[ModelVersion], version: str) -> ModelVersion:
        for row in rows:
            if row.version == version:
                return row
        raise KeyError(f"no model version {version!r} in the registry")

    @staticmethod
    def _production_of(rows: list[ModelVersion], model_name: str) -> ModelVersion | None:
        prod = [r for r in rows if r.model_name == model_name and r.status == "production"]
        return prod[-1] if prod else None

    @staticmethod
    def _next_number(rows: list[ModelVersion], model_name: str) -> str:
        numbers = [int(r.version.rsplit("-v", 1)[1]) for r in rows
                   if r.model_name == model_name and r.version.rsplit("-v", 1)[-1].isdigit()]
        return f"{model_name}-v{max(numbers, default=0) + 1:04d}"

    def _commit(self, what: str, plan: Callable[[list[ModelVersion]], _Change],
                retries: int | None = None, reason: str | None = None) -> _Change:
        """Run ``plan`` on a fresh snapshot and commit its change from that snapshot; on a
        conflicting concurrent commit, read again, plan again (re-checking, so a change that a
        concurrent commit made moot raises there), commit again. Returns the committed change."""
        if reason is not None and not reason.strip():
            raise RegistryError(f"{what}: a reason is required")
        retries = self.retries if retries is None else retries
        for attempt in range(retries + 1):
            table = self._open()
            if table is None:
                plan([])  # refuses before anything is created (e.g. promoting an unknown version)
                table = self._open(create=True)
            raw = table.to_pyarrow_table()
            change = plan(self._rows(raw))
            try:
                self._write(table, raw, change, f"{what}: {reason}" if reason else what, attempt)
                return change
            except Exception as exc:  # noqa: BLE001 - re-raised unless a commit conflict
                if not _commit_conflict(exc):
                    raise RegistryCommitError(
                        f"{what}: the commit to {self.uri} (from its version {table.version()}) "
                        f"failed: {exc}. Check that the lake is writable and reachable (disk "
                        "space, permissions, credentials), look at `python -m dnr.registry list` "
                        "to see whether the change landed, then run again.") from exc
                if attempt == retries:
                    raise RegistryError(f"{what}: still conflicting with concurrent registry commits "
                                        f"after {retries + 1} attempts: {exc}") from exc
            time.sleep(random.uniform(0.05, 0.25) * (attempt + 1))

    def _write(self, table, raw: pa.Table, change: _Change, note: str, attempt: int = 0) -> None:
        """Commit ``change`` from ``table``'s snapshot (``raw`` is its content), never from a
        newer one: that is what lets the conflict check see every registry commit made since."""
        from deltalake import CommitProperties, Transaction, write_deltalake

        if change.append:
            mode, data = "append", pa.Table.from_pylist(self._stored(change.append),
                                                        schema=MODEL_REGISTRY.arrow)
        else:
            mode, data = "overwrite", self._rewrite(raw, change.replace)
        props = CommitProperties(
            app_transactions=[Transaction(APP_ID, table.version() + 1)],
            custom_metadata={"userMetadata": note, COMMIT_ATTEMPT_KEY: attempt})
        write_deltalake(table, data, mode=mode, schema_mode="merge", commit_properties=props)

    def _rewrite(self, raw: pa.Table, changed: tuple[ModelVersion, ...]) -> pa.Table:
        """The whole table with the ``changed`` rows replaced; columns this code does not know
        (written by a newer schema) are kept as they are."""
        by_version = {v[R.version]: v for v in self._stored(changed)}
        rows = [{**row, **by_version.get(row[R.version], {})} for row in raw.to_pylist()]
        ours = MODEL_REGISTRY.arrow
        extra = [f for f in raw.schema if f.name not in ours.names]
        return pa.Table.from_pylist(rows, schema=pa.schema([*ours, *extra]))
