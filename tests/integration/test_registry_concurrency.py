"""Two processes writing the registry at the same moment, on a local lake and on the local S3
server: promotions keep exactly one production row at every table version, registrations of
the same number have one winner, two identical ``jobs/promote.py`` runs have one winner and a
loser that says so, and nothing is lost."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import io
import multiprocessing as mp
from pathlib import Path

import pytest
from deltalake import DeltaTable

from dnr.registry import COMMIT_ATTEMPT_KEY, ModelVersion, Registry, VersionExistsError
from dnr.storage import Lake

pytestmark = pytest.mark.integration
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
PROMOTE_JOB = Path(__file__).resolve().parents[2] / "jobs" / "promote.py"


def _version(n: int, status: str = "candidate") -> ModelVersion:
    return ModelVersion(version=f"dnr-v{n:04d}", model_name="dnr", family="prm", status=status,
                        checkpoint_uri=f"/ckpt/{n}", config_json="{}", created_at=T0 + dt.timedelta(hours=n))


def _worker(tasks, barrier, results) -> None:
    """Runs in a spawned process: for each (lake root, op, arg), wait at the start line with the
    other writer, then do the op; report "ok ..." or the error."""
    for root, op, arg in tasks:
        registry = Registry(Lake(root))
        registry.versions()  # imports and the first read happen before the start line
        number = registry.next_version("dnr")  # both writers see the same next number
        barrier.wait(timeout=60)
        try:
            if op == "promote":
                registry.promote(arg, reason=f"writer promoting {arg}")
                results.put((root, arg, "ok"))
            else:  # register under the number seen before the start; on a clash take the next
                try:
                    registry.register(_version(int(number.rsplit("-v", 1)[1])))
                    results.put((root, arg, f"ok {number}"))
                except VersionExistsError:
                    number = registry.next_version("dnr")
                    registry.register(_version(int(number.rsplit("-v", 1)[1])))
                    results.put((root, arg, f"ok {number} after VersionExistsError"))
        except Exception as exc:  # noqa: BLE001 - reported to the test
            results.put((root, arg, f"{type(exc).__name__}: {exc}"))


def _race(per_writer: list[list[tuple[str, str, str]]]) -> dict[tuple[str, str], str]:
    """Two spawned writers run their task lists in lock-step; {(root, arg): outcome}."""
    ctx = mp.get_context("spawn")  # no fork: the parent has a live deltalake runtime
    barrier, results = ctx.Barrier(len(per_writer)), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(tasks, barrier, results)) for tasks in per_writer]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for tasks in per_writer for _ in tasks]
    for p in procs:
        p.join(timeout=30)
    return {(root, arg): outcome for root, arg, outcome in outcomes}


def _production_at_every_version(registry: Registry, since: int) -> list[int]:
    """How many production rows the table holds at each version from ``since`` on."""
    table = DeltaTable(registry.uri, storage_options=registry.lake.storage_options())
    counts = []
    for version in range(since, table.version() + 1):
        table.load_as_version(version)
        counts.append(table.to_pyarrow_table().column("status").to_pylist().count("production"))
    return counts


def _attempts(registry: Registry) -> list[int]:
    table = DeltaTable(registry.uri, storage_options=registry.lake.storage_options())
    return [c[COMMIT_ATTEMPT_KEY] for c in table.history() if COMMIT_ATTEMPT_KEY in c]


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def lake_kind(request) -> str:
    return request.param


def test_two_concurrent_promotions_leave_exactly_one_production(lake_kind, request, tmp_path):
    if lake_kind == "local":
        lakes = [Lake(str(tmp_path / f"round{i}")) for i in range(4)]
    else:
        server = request.getfixturevalue("s3_server")
        lakes = [Lake(f"s3://{server.make_bucket()}/lake") for _ in range(2)]
    starts = []
    for i, lake in enumerate(lakes):
        registry = Registry(lake)
        for n in (1, 2, 3):  # one file each: disjoint files, the case plain updates get wrong
            registry.register(_version(n))
        if i % 2:  # odd rounds replace a production version, even rounds start without one
            registry.promote("dnr-v0001", reason="the first production")
        starts.append(DeltaTable(registry.uri, storage_options=lake.storage_options()).version())

    outcomes = _race([[(lake.root, "promote", "dnr-v0002") for lake in lakes],
                      [(lake.root, "promote", "dnr-v0003") for lake in lakes]])

    collided = 0
    for i, lake in enumerate(lakes):
        assert outcomes[(lake.root, "dnr-v0002")] == "ok" and outcomes[(lake.root, "dnr-v0003")] == "ok"
        registry = Registry(lake)
        status = {v.version: v for v in registry.versions()}
        winner = registry.production("dnr")
        loser = status["dnr-v0002" if winner.version == "dnr-v0003" else "dnr-v0003"]
        assert [v.status for v in status.values()].count("production") == 1
        assert loser.status == "retired" and loser.retired_at == winner.promoted_at  # one commit
        assert status["dnr-v0001"].status == ("retired" if i % 2 else "candidate")
        # the two promotions are two commits, and no table version ever had 0 or 2 production
        assert _production_at_every_version(registry, starts[i] + 1) == [1, 1]
        collided += max(_attempts(registry)) > 0
    # the writers really raced: at least one promotion had to re-read and retry
    assert collided >= 1, "no round had a conflicting commit: the race was not exercised"


def test_two_writers_registering_the_same_number_get_different_versions(local_lake):
    registry = Registry(local_lake)
    registry.register(_version(1))
    outcomes = _race([[(local_lake.root, "register", "a")], [(local_lake.root, "register", "b")]])
    assert sorted(outcomes.values()) == ["ok dnr-v0002", "ok dnr-v0003 after VersionExistsError"]
    assert [v.version for v in registry.versions()] == ["dnr-v0001", "dnr-v0002", "dnr-v0003"]


def _promote_job(root: str, reason: str, barrier, results) -> None:
    """Runs in a spawned process: ``jobs/promote.py --version dnr-v0002 --reason <reason>``, its
    ``main`` started at the same moment as the other process's; reports (reason, exit code, output)."""
    spec = importlib.util.spec_from_file_location("promote_job", PROMOTE_JOB)
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    Registry(Lake(root)).versions()  # imports and the first read happen before the start line
    out = io.StringIO()
    barrier.wait(timeout=60)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = job.main(["--lake", root, "--version", "dnr-v0002", "--reason", reason])
    results.put((reason, code, out.getvalue()))


@pytest.mark.parametrize("production", [None, "dnr-v0001"])
def test_the_loser_of_two_identical_promote_jobs_says_already_production_and_fails(tmp_path, production):
    lake = Lake(str(tmp_path / "lake"))
    registry = Registry(lake)
    for n in (1, 2):
        registry.register(_version(n))
    if production:
        registry.promote(production, reason="the first production")
    start = DeltaTable(registry.uri).version()
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_promote_job, args=(lake.root, reason, barrier, results))
             for reason in ("ticket 1", "ticket 2")]
    for p in procs:
        p.start()
    outcomes = {reason: (code, out) for reason, code, out in (results.get(timeout=120) for _ in procs)}
    for p in procs:
        p.join(timeout=30)

    assert sorted(code for code, _ in outcomes.values()) == [0, 3], outcomes
    winner = next(reason for reason, (code, _) in outcomes.items() if code == 0)
    loser = "ticket 2" if winner == "ticket 1" else "ticket 1"
    won, lost = outcomes[winner][1], outcomes[loser][1]
    assert "dnr-v0002 -> production" in won, won
    assert "dnr-v0002 is already production" in lost and f"'{loser}' is not recorded" in lost, lost
    assert "-> production" not in lost, lost  # nothing claims success for the loser
    assert DeltaTable(registry.uri).version() == start + 1  # one commit: the winner's
    assert registry.get("dnr-v0002").status_reason.endswith(f": {winner}")
    assert all(loser not in (v.status_reason or "") for v in registry.versions())
