"""Registry rows on a real local Delta table: lineage, the promote / reject / rollback
lifecycle, schema evolution, conflict-checked commits, the CLIs; and the daily window plan."""

import dataclasses
import datetime as dt
import json
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from dnr.registry import (AlreadyProductionError, ModelVersion, ProductionChangedError, Registry,
                          RegistryError, VersionExistsError, _Change)
from dnr.evaluation.gate import Decision
from dnr.registry.cli import listing, show
from dnr.evaluation.replay import apply_decision
from dnr.schemas import MODEL_REGISTRY
from dnr.storage import Lake
from dnr.daily.run import plan_window

REPO = Path(__file__).resolve().parents[2]
NEW_COLUMNS = ("promoted_at", "retired_at", "status_reason", "report_id")


def _version(n: int, status: str, parent=None, window=("2026-01-01", "2026-01-02"), table_version=0):
    return ModelVersion(
        version=f"dnr-v{n:04d}", model_name="dnr", family="prm", status=status,
        checkpoint_uri=f"/ckpt/{n}", config_json="{}",
        created_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(hours=n),
        parent_version=parent, window_start=window[0], window_end=window[1], table_version=table_version)


def test_parent_is_production_else_newest_candidate(tmp_path):
    registry = Registry(Lake(str(tmp_path)))
    assert registry.parent_for("dnr") is None and registry.next_version("dnr") == "dnr-v0001"
    registry.register(_version(1, "candidate"))
    registry.register(_version(2, "candidate", parent="dnr-v0001"))
    assert registry.parent_for("dnr").version == "dnr-v0002"
    registry.register(_version(3, "production"))
    registry.register(_version(4, "candidate", parent="dnr-v0003"))
    assert registry.parent_for("dnr").version == "dnr-v0003"
    assert registry.next_version("dnr") == "dnr-v0005"
    assert registry.get("dnr-v0004").parent_version == "dnr-v0003"
    with pytest.raises(KeyError, match="dnr-v0009"):
        registry.get("dnr-v0009")


def test_same_parent_same_window_same_table_version_is_found(tmp_path):
    registry = Registry(Lake(str(tmp_path)))
    registry.register(_version(1, "candidate", parent="dnr-v0000", window=("2026-01-03", "2026-01-03"),
                               table_version=4))
    assert registry.find_equivalent("dnr", "dnr-v0000", "2026-01-03", 4).version == "dnr-v0001"
    assert registry.find_equivalent("dnr", "dnr-v0000", "2026-01-03", 5) is None  # new data landed
    assert registry.find_equivalent("dnr", None, "2026-01-03", 4) is None


def test_concurrent_registrations_both_land(tmp_path):
    registry = Registry(Lake(str(tmp_path)))
    registry.register(_version(1, "candidate"))
    errors = []

    def write(n):
        try:
            Registry(Lake(str(tmp_path))).register(_version(n, "candidate"))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in (2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and [v.version for v in registry.versions()] == ["dnr-v0001", "dnr-v0002", "dnr-v0003"]


def test_window_plan():
    days = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]
    assert plan_window(days, None, "2026-01-04") == ("2026-01-01", "2026-01-03")
    parent = _version(1, "production", window=("2026-01-01", "2026-01-02"))
    assert plan_window(days, parent, "2026-01-04") == ("2026-01-03", "2026-01-03")
    assert plan_window(days, parent, "2026-01-03") is None  # nothing after the watermark before D
    assert plan_window(days[:2] + days[3:], parent, "2026-01-05") == ("2026-01-04", "2026-01-04")


def test_bad_status_is_refused():
    with pytest.raises(ValueError, match="status 'live'"):
        _version(1, "live")


def _registry(tmp_path, *versions: ModelVersion) -> Registry:
    registry = Registry(Lake(str(tmp_path / "lake")))
    for v in versions:
        registry.register(v)
    return registry


def _table_version(registry: Registry) -> int:
    return DeltaTable(registry.uri).version()


def _statuses(registry: Registry) -> dict[str, str]:
    return {v.version: v.status for v in registry.versions()}


def test_promote_retires_the_previous_production_in_one_commit(tmp_path):
    registry = _registry(tmp_path, _version(1, "candidate"), _version(2, "candidate"))
    first = registry.promote("dnr-v0001", reason="first model", by="alice")
    assert first.status == "production" and first.status_reason == "promoted by alice: first model"
    before = _table_version(registry)
    second = registry.promote("dnr-v0002", reason="ndcg@6 +1.2%", report_id="rep-7")
    assert _table_version(registry) == before + 1  # one commit moved both rows
    old = registry.get("dnr-v0001")
    assert _statuses(registry) == {"dnr-v0001": "retired", "dnr-v0002": "production"}
    assert old.retired_at == second.promoted_at == registry.get("dnr-v0002").promoted_at
    assert registry.get("dnr-v0002").status_reason == "promoted by replay report rep-7: ndcg@6 +1.2%"
    assert old.report_id == "rep-7" and old.status_reason.startswith("retired by replay report rep-7")
    assert registry.production("dnr").version == registry.parent_for("dnr").version == "dnr-v0002"


def test_promote_refuses_what_is_not_a_candidate_and_a_second_promote_changes_nothing(tmp_path):
    registry = _registry(tmp_path, _version(1, "candidate"), _version(2, "candidate"))
    registry.reject("dnr-v0002", reason="loses to the retriever order", report_id="rep-3")
    assert registry.get("dnr-v0002").status_reason == (
        "rejected by replay report rep-3: loses to the retriever order")
    with pytest.raises(RegistryError, match="cannot promote dnr-v0002: it is rejected"):
        registry.promote("dnr-v0002", reason="try anyway")
    with pytest.raises(KeyError, match="dnr-v0009"):
        registry.promote("dnr-v0009", reason="no such version")
    empty = Registry(Lake(str(tmp_path / "empty")))
    with pytest.raises(KeyError, match="dnr-v0001"):
        empty.promote("dnr-v0001", reason="no registry yet")
    assert empty.versions() == [] and not (tmp_path / "empty").exists()
    with pytest.raises(RegistryError, match="a reason is required"):
        registry.promote("dnr-v0001", reason=" ")
    registry.promote("dnr-v0001", reason="first")
    before = _table_version(registry)
    with pytest.raises(AlreadyProductionError, match="dnr-v0001 is already production .promoted by .*: "
                       "first.; nothing changed, the reason 'again' is not recorded") as refused:
        registry.promote("dnr-v0001", reason="again")
    assert refused.value.production.version == "dnr-v0001" and _table_version(registry) == before
    with pytest.raises(RegistryError, match="cannot reject dnr-v0001: it is production.*rollback"):
        registry.reject("dnr-v0001", reason="no")


def test_a_promotion_whose_commit_loses_to_the_same_promotion_is_refused_not_reported_done(
        tmp_path, monkeypatch):
    """The race of two identical promotions, made deterministic: the other promotion commits
    between this one's read and its commit; the retry finds the version production already."""
    registry = _registry(tmp_path, _version(1, "candidate"), _version(2, "candidate"))
    registry.promote("dnr-v0001", reason="first")
    before = _table_version(registry)
    write, raced = Registry._write, []

    def other_commits_first(self, *args, **kwargs):
        if self is registry and not raced:
            raced.append(Registry(registry.lake).promote("dnr-v0002", reason="ticket 1", by="alice"))
        return write(self, *args, **kwargs)

    monkeypatch.setattr(Registry, "_write", other_commits_first)
    with pytest.raises(AlreadyProductionError, match="dnr-v0002 is already production .promoted by alice: "
                       "ticket 1.; nothing changed, the reason 'ticket 2' is not recorded"):
        registry.promote("dnr-v0002", reason="ticket 2", by="bob")
    assert raced and _table_version(registry) == before + 1  # the other's commit only
    assert registry.get("dnr-v0002").status_reason == "promoted by alice: ticket 1"
    assert "ticket 2" not in registry.get("dnr-v0001").status_reason


def test_a_rollback_whose_commit_loses_to_the_same_rollback_is_refused_not_taken_twice(tmp_path, monkeypatch):
    """Two identical rollbacks at once: the other commits between this one's read and its
    commit; the retry must not roll back a second version nobody asked to leave."""
    registry = _registry(tmp_path, *(_version(n, "candidate") for n in (1, 2, 3)))
    for n in (1, 2, 3):
        registry.promote(f"dnr-v{n:04d}", reason=f"release {n}")
    before = _table_version(registry)
    write, raced = Registry._write, []

    def other_commits_first(self, *args, **kwargs):
        if self is registry and not raced:
            raced.append(Registry(registry.lake).rollback("dnr", reason="CTR dropped", by="alice"))
        return write(self, *args, **kwargs)

    monkeypatch.setattr(Registry, "_write", other_commits_first)
    with pytest.raises(ProductionChangedError, match="production moved from dnr-v0003 to dnr-v0002 .*"
                       "the reason 'CTR dropped, again' is not recorded"):
        registry.rollback("dnr", reason="CTR dropped, again", by="bob")
    assert raced and _table_version(registry) == before + 1  # the other's rollback only
    assert _statuses(registry) == {"dnr-v0001": "retired", "dnr-v0002": "production", "dnr-v0003": "rejected"}


def test_a_gate_promotion_commits_only_against_the_production_it_was_evaluated_with(tmp_path):
    registry = _registry(tmp_path, *(_version(n, "candidate") for n in (1, 2, 3)))
    with pytest.raises(ProductionChangedError, match="production of 'dnr' is none, not dnr-v0009"):
        registry.promote("dnr-v0001", reason="gate", expected_production="dnr-v0009")
    registry.promote("dnr-v0001", reason="first", expected_production=None)
    evaluated_against = registry.production("dnr").version
    registry.promote("dnr-v0002", reason="an operator, meanwhile", by="bob")
    before = _table_version(registry)
    with pytest.raises(ProductionChangedError, match="is dnr-v0002, not dnr-v0001.*evaluate it again"):
        registry.promote("dnr-v0003", reason="gate", report_id="rep-9", expected_production=evaluated_against)
    assert _table_version(registry) == before and registry.get("dnr-v0003").status == "candidate"
    registry.promote("dnr-v0003", reason="gate", expected_production="dnr-v0002")
    assert _statuses(registry) == {"dnr-v0001": "retired", "dnr-v0002": "retired", "dnr-v0003": "production"}


def test_a_gate_decision_against_a_production_that_moved_meanwhile_is_not_applied(tmp_path):
    registry = _registry(tmp_path, *(_version(n, "candidate") for n in (1, 2, 3)))
    registry.promote("dnr-v0001", reason="first")
    promote = Decision(promote=True, checks=())
    # the replay compared dnr-v0003 with dnr-v0001; an operator promoted dnr-v0002 before its commit
    registry.promote("dnr-v0002", reason="hotfix", by="bob")
    with pytest.warns(UserWarning, match="evaluate it again"):
        action = apply_decision(registry, registry.get("dnr-v0003"), promote, "rep-1", "dnr-v0001")
    assert action == ("not applied: production moved from dnr-v0001 to dnr-v0002 during the "
                      "evaluation; evaluate again")
    assert _statuses(registry) == {"dnr-v0001": "retired", "dnr-v0002": "production", "dnr-v0003": "candidate"}
    assert apply_decision(registry, registry.get("dnr-v0003"), promote, "rep-2", "dnr-v0002") == "promoted"
    assert registry.production("dnr").version == "dnr-v0003"
    with pytest.warns(UserWarning, match="already production"):  # a second gate run on the same day
        again = apply_decision(registry, registry.get("dnr-v0003"), promote, "rep-3", "dnr-v0003")
    assert again.startswith("not applied: dnr-v0003 is production already (promoted by replay report rep-2")


def test_rollback_walks_back_through_retired_versions(tmp_path):
    registry = _registry(tmp_path, *(_version(n, "candidate") for n in (1, 2, 3)))
    with pytest.raises(RegistryError, match="dnr: it has no production version"):
        registry.rollback("dnr", reason="nothing yet")
    for n in (1, 2, 3):
        registry.promote(f"dnr-v{n:04d}", reason=f"step {n}")
    restored, demoted = registry.rollback("dnr", reason="CTR dropped", by="bob")
    assert (restored.version, demoted.version) == ("dnr-v0002", "dnr-v0003")
    assert _statuses(registry) == {"dnr-v0001": "retired", "dnr-v0002": "production", "dnr-v0003": "rejected"}
    assert registry.get("dnr-v0003").status_reason == "rolled back by bob: CTR dropped"
    assert registry.get("dnr-v0002").retired_at is None
    restored, demoted = registry.rollback("dnr", reason="still bad", by="bob")
    assert (restored.version, demoted.version) == ("dnr-v0001", "dnr-v0002")
    with pytest.raises(RegistryError, match="no retired version to restore .dnr-v0001 is production"):
        registry.rollback("dnr", reason="once more")
    assert _statuses(registry)["dnr-v0001"] == "production"


def test_register_refuses_a_taken_number_and_a_second_production(tmp_path):
    registry = _registry(tmp_path, _version(1, "production"))
    with pytest.raises(VersionExistsError, match="dnr-v0001 is already registered.*as dnr-v0002"):
        registry.register(_version(1, "candidate"))
    with pytest.raises(RegistryError, match="cannot register dnr-v0002 as production: dnr-v0001"):
        registry.register(_version(2, "production"))
    assert [v.version for v in registry.versions()] == ["dnr-v0001"]


def test_a_table_with_the_old_schema_gains_the_lifecycle_columns(tmp_path):
    registry = Registry(Lake(str(tmp_path / "lake")))
    old = pa.schema([f for f in MODEL_REGISTRY.arrow if f.name not in NEW_COLUMNS])
    rows = [{k: v for k, v in dataclasses.asdict(_version(n, "candidate")).items() if k in old.names}
            for n in (1, 2)]
    write_deltalake(registry.uri, pa.Table.from_pylist(rows, schema=old))
    assert registry.get("dnr-v0001").promoted_at is None
    registry.promote("dnr-v0001", reason="first on the old table")  # rewrite path
    registry.register(_version(3, "candidate"))  # append path
    stored = pa.schema(DeltaTable(registry.uri).schema().to_arrow())
    assert all(name in stored.names for name in NEW_COLUMNS)
    assert _statuses(registry) == {"dnr-v0001": "production", "dnr-v0002": "candidate",
                                   "dnr-v0003": "candidate"}
    assert registry.get("dnr-v0001").promoted_at is not None


def test_a_change_committed_from_a_stale_snapshot_is_refused(tmp_path):
    """The registry's guarantee, made deterministic: a writer that read the table before another
    registry commit cannot commit. A blind append by the other writer is caught only by the Delta
    txn app id every registry commit carries ("Concurrent transaction failed")."""
    registry = _registry(tmp_path, _version(1, "candidate"), _version(2, "candidate"))
    stale = DeltaTable(registry.uri)
    raw = stale.to_pyarrow_table()
    registry.register(_version(3, "candidate"))  # the other writer: a blind append
    v2 = dataclasses.replace(registry.get("dnr-v0002"), status="production")
    with pytest.raises(CommitFailedError, match="Concurrent transaction failed"):
        registry._write(stale, raw, _Change(replace=(v2,)), "promote from a stale snapshot")
    with pytest.raises(CommitFailedError, match="Concurrent transaction failed"):
        registry._write(stale, raw, _Change(append=(_version(3, "candidate"),)), "register again")

    stale = DeltaTable(registry.uri)
    raw = stale.to_pyarrow_table()
    registry.promote("dnr-v0001", reason="the other writer won")  # a rewrite
    with pytest.raises(CommitFailedError, match="(?i)concurrent"):
        registry._write(stale, raw, _Change(replace=(v2,)), "promote from a stale snapshot")
    assert _statuses(registry) == {"dnr-v0001": "production", "dnr-v0002": "candidate",
                                   "dnr-v0003": "candidate"}


def test_lineage_and_show(tmp_path):
    registry = _registry(tmp_path, _version(1, "candidate"), _version(2, "candidate", parent="dnr-v0001"),
                         _version(3, "candidate", parent="dnr-v0002", table_version=7),
                         _version(4, "candidate", parent="dnr-v0000"))
    assert [v.version for v in registry.lineage("dnr-v0003")] == ["dnr-v0003", "dnr-v0002", "dnr-v0001"]
    assert [v.version for v in registry.lineage("dnr-v0004")] == ["dnr-v0004"]
    registry.promote("dnr-v0003", reason="good", report_id="rep-1")
    text = show(registry, "dnr-v0003")
    for expected in ("status         production", "dnr-v0003 (production) <- dnr-v0002 (candidate) <- "
                     "dnr-v0001 (candidate) <- (cold start)", "2026-01-01 .. 2026-01-02, request_logs "
                     "table version 7", "promoted by replay report rep-1: good", "checkpoint     /ckpt/3"):
        assert expected in text, text
    assert "dnr-v0000 (not in the registry)" in show(registry, "dnr-v0004")
    lines = listing(registry, "dnr").splitlines()
    assert lines[0].split()[:3] == ["VERSION", "STATUS", "PARENT"] and len(lines) == 5
    assert lines[3].split()[:2] == ["dnr-v0003", "production"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_registry_cli_and_promote_job(tmp_path):
    registry = _registry(tmp_path, _version(1, "candidate"), _version(2, "candidate", parent="dnr-v0001"))
    lake = registry.lake.root
    job = _run("jobs/promote.py", "--lake", lake, "--version", "dnr-v0001", "--reason", "first")
    assert job.returncode == 0, job.stderr
    assert "production before: (none)" in job.stdout and "production after: dnr-v0001" in job.stdout
    again = _run("jobs/promote.py", "--lake", lake, "--version", "dnr-v0001", "--reason", "first, again")
    assert again.returncode == 3 and "-> production" not in again.stdout, again.stdout + again.stderr
    assert "dnr-v0001 is already production" in again.stderr and "'first, again' is not recorded" in again.stderr
    job = _run("jobs/promote.py", "--lake", lake, "--version", "dnr-v0002", "--reason", "better",
               "--report-id", "rep-2")
    assert "dnr-v0002 -> production, dnr-v0001 -> retired" in job.stdout, job.stdout + job.stderr
    job = _run("jobs/promote.py", "--lake", lake, "--rollback", "--reason", "regression")
    assert "dnr-v0002 -> rejected, dnr-v0001 -> production" in job.stdout, job.stdout + job.stderr
    job = _run("jobs/promote.py", "--lake", lake, "--version", "dnr-v0002", "--reason", "again")
    assert job.returncode == 1 and "refused: cannot promote dnr-v0002: it is rejected" in job.stderr

    listing = _run("-m", "dnr.registry", "--lake", lake, "list", "--model", "dnr")
    assert listing.returncode == 0, listing.stderr
    assert [line.split()[:2] for line in listing.stdout.splitlines()[1:]] == [
        ["dnr-v0001", "production"], ["dnr-v0002", "rejected"]]
    show = _run("-m", "dnr.registry", "--lake", lake, "show", "dnr-v0002")
    assert "rolled back by" in show.stdout and "dnr-v0002 (rejected) <- dnr-v0001 (production)" in show.stdout
    prod = _run("-m", "dnr.registry", "--lake", lake, "production")
    assert prod.returncode == 0 and prod.stdout.splitlines()[0] == "dnr-v0001"
    missing = _run("-m", "dnr.registry", "--lake", lake, "show", "dnr-v0042")
    assert missing.returncode == 1 and "no model version 'dnr-v0042'" in missing.stderr
    rows = _run("-m", "dnr.registry", "--lake", lake, "list", "--json")
    assert rows.returncode == 0, rows.stderr  # for scripts: JSON lines, and a clean exit
    parsed = [json.loads(line) for line in rows.stdout.splitlines()]
    assert [(r["version"], r["status"]) for r in parsed] == [("dnr-v0001", "production"), ("dnr-v0002", "rejected")]
    assert dt.datetime.fromisoformat(parsed[0]["promoted_at"]).tzinfo is not None


def test_a_window_is_capped_to_its_newest_days():
    from dnr.daily.run import cap_window

    days = [f"2026-01-{d:02d}" for d in range(1, 11)]
    assert cap_window(days, ("2026-01-01", "2026-01-09"), 3) == (
        ("2026-01-07", "2026-01-09"), [f"2026-01-{d:02d}" for d in range(1, 7)])
    assert cap_window(days, ("2026-01-01", "2026-01-09"), 0) == (("2026-01-01", "2026-01-09"), [])
    assert cap_window(days, ("2026-01-08", "2026-01-09"), 3) == (("2026-01-08", "2026-01-09"), [])


def _gate(*failed: str) -> Decision:
    from dnr.evaluation.gate import Check

    names = ("requests", "finite_scores", "score_spread", "not_tied", "primary", "guardrail:AUC",
             "retriever_floor")
    return Decision(promote=not failed, checks=tuple(Check(n, n not in failed, "") for n in names))


def test_two_rejected_days_in_a_row_keep_the_line_learning_on_one_day_windows(tmp_path):
    """No production: each day warm-starts from the newest version the gate rejected on quality
    alone, so every window is the one new day; a sanity rejection or a person's is never a parent."""
    registry = Registry(Lake(str(tmp_path)))
    days = [f"2026-01-{d:02d}" for d in range(1, 6)]
    parent = None
    for n, ds in enumerate(days[2:], start=1):  # days 3, 4, 5: trained, then rejected on quality
        window = plan_window(days, parent, ds)
        assert window == ((days[0], days[1]) if parent is None else (days[n], days[n]))
        registry.register(_version(n, "candidate", parent=parent and parent.version, window=window))
        if n < 3:
            apply_decision(registry, registry.get(f"dnr-v{n:04d}"), _gate("primary", "guardrail:AUC"),
                           report_id=f"r{n}", production=None)
            parent = registry.parent_for("dnr")
            assert parent.version == f"dnr-v{n:04d}" and parent.status == "rejected"
    # a sanity rejection (NaN scores) is not learned from: the quality-rejected v0002 stays the parent
    apply_decision(registry, registry.get("dnr-v0003"), _gate("finite_scores", "primary"),
                   report_id="r3", production=None)
    assert registry.parent_for("dnr").version == "dnr-v0002"
    registry.register(_version(4, "candidate", parent="dnr-v0002"))
    registry.reject("dnr-v0004", reason="looks wrong", by="alice")  # a person's rejection
    assert registry.parent_for("dnr").version == "dnr-v0002"


def test_a_copied_lake_resolves_its_checkpoints_in_the_copy(tmp_path):
    import shutil

    original = Lake(str(tmp_path / "lake"))
    checkpoint = Path(original.uri("checkpoints", "dnr-2026-01-03", "checkpoint_0"))
    checkpoint.mkdir(parents=True)
    registry = Registry(original)
    registry.register(dataclasses.replace(_version(1, "candidate"), checkpoint_uri=str(checkpoint)))
    registry.promote("dnr-v0001", reason="test")  # a rewrite keeps the stored form
    stored = DeltaTable(registry.uri).to_pyarrow_table().column("checkpoint_uri").to_pylist()
    assert stored == ["checkpoints/dnr-2026-01-03/checkpoint_0"]  # relative to the lake root

    shutil.copytree(original.root, tmp_path / "copy")
    shutil.rmtree(original.root)
    copied = Registry(Lake(str(tmp_path / "copy"))).get("dnr-v0001")
    assert copied.checkpoint_uri == str(tmp_path / "copy" / "checkpoints" / "dnr-2026-01-03" / "checkpoint_0")
    assert Path(copied.checkpoint_uri).is_dir() and copied.status == "production"
    # a location outside the lake is kept as it was written
    assert Registry(Lake(str(tmp_path / "copy"))).lake.resolve("/ckpt/1") == "/ckpt/1"


FAILING_COMMIT = """
import dataclasses, resource, signal, sys
sys.path.insert(0, {tests!r})
from test_registry import _version
from dnr.registry import Registry, RegistryCommitError
from dnr.storage import Lake

registry = Registry(Lake({root!r}))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))  # no file may grow: a full disk
try:
    registry.register(_version(2, "candidate"))
except RegistryCommitError as error:
    print(error, flush=True)
"""


def test_a_failed_registry_commit_names_the_table_and_the_change(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    Registry(lake).register(_version(1, "candidate"))
    script = FAILING_COMMIT.format(tests=str(Path(__file__).parent), root=lake.root)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    message = done.stdout
    assert f"register dnr-v0002: the commit to {lake.table_uri('model_registry')}" in message, done.stderr
    assert "File too large" in message and "python -m dnr.registry list" in message
    assert [v.version for v in Registry(lake).versions()] == ["dnr-v0001"]  # nothing landed
