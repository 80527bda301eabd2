"""The lake lease on a local lake: one holder at a time, expiry, takeover races, renewal, release."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import threading
import time

import pytest

from dnr.lease import LakeLease, LeaseError, LeaseHeld, LeaseLost, LeaseRecord
from dnr.storage import Lake

NAME = "train_daily/dnr"


def test_acquire_writes_the_record_and_a_second_run_is_refused_naming_the_holder(local_lake):
    with LakeLease(local_lake, NAME, ttl_s=60, owner="run-a") as lease:
        path = os.path.join(local_lake.root, "_leases", "train_daily", "dnr.json")
        assert lease.uri == path
        doc = json.load(open(path))
        assert {"owner", "host", "pid", "acquired_at", "expires_at"} <= set(doc)
        assert doc["owner"] == "run-a" and doc["pid"] == os.getpid() and doc["released_at"] is None
        with pytest.raises(LeaseHeld, match="held by 'run-a'") as info:
            LakeLease(local_lake, NAME, ttl_s=60, owner="run-b").acquire()
        assert info.value.holder.owner == "run-a"
        assert doc["expires_at"][:19] in str(info.value)  # the expiry is named, in UTC
        # another name is another lease
        with LakeLease(local_lake, "train_daily/other", ttl_s=60):
            pass
    record = LakeLease.read(local_lake, NAME)
    assert record.released_at is not None and not record.live()
    with LakeLease(local_lake, NAME, ttl_s=60, owner="run-b") as lease:  # released: free again
        assert LakeLease.read(local_lake, NAME).owner == "run-b"


def test_an_expired_lease_is_taken_over_and_its_old_holder_cannot_renew_or_release(local_lake):
    # a ttl with a margin: a loaded machine (the full suite) once spent more than 0.2 s between
    # the two acquires, and the first lease had expired before the second one was refused
    crashed = LakeLease(local_lake, NAME, ttl_s=1.0, owner="crashed").acquire()  # never released
    with pytest.raises(LeaseHeld):
        LakeLease(local_lake, NAME, ttl_s=60).acquire()
    time.sleep(max(0.0, crashed.record.expires_at - time.time()) + 0.05)
    with LakeLease(local_lake, NAME, ttl_s=60, owner="tomorrow"):
        with pytest.raises(LeaseLost, match="held by 'tomorrow'"):
            crashed.renew()
        with pytest.raises(LeaseLost):
            crashed.check()
        crashed.release()  # not ours any more: must leave tomorrow's lease alone
        assert LakeLease.read(local_lake, NAME).owner == "tomorrow"
        assert LakeLease.read(local_lake, NAME).live()


def test_an_expired_lease_nobody_took_is_renewed_by_its_holder(local_lake):
    lease = LakeLease(local_lake, NAME, ttl_s=0.1).acquire()
    time.sleep(0.15)
    assert lease.renew() > time.time() + 0.05
    lease.check()
    lease.release()


def _contend(root: str, barrier, results) -> None:
    lease = LakeLease(Lake(root), NAME, ttl_s=60, owner=f"pid-{os.getpid()}")
    barrier.wait()
    try:
        lease.acquire()
        results.put("won")
    except LeaseHeld:
        results.put("held")


@pytest.mark.parametrize("stale", [False, True], ids=["fresh", "stale"])
def test_concurrent_processes_exactly_one_wins(local_lake, stale):
    if stale:
        LakeLease(local_lake, NAME, ttl_s=0.05, owner="dead").acquire()
        time.sleep(0.1)
    ctx = mp.get_context("fork")
    n = 6
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(local_lake.root, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    outcomes = sorted(results.get(timeout=30) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    assert outcomes == ["held"] * (n - 1) + ["won"]
    assert LakeLease.read(local_lake, NAME).owner.startswith("pid-")


def test_concurrent_threads_exactly_one_wins_a_stale_lease(local_lake):
    LakeLease(local_lake, NAME, ttl_s=0.05, owner="dead").acquire()
    time.sleep(0.1)
    n = 8
    barrier, won, held = threading.Barrier(n), [], []

    def contend(i):
        lease = LakeLease(local_lake, NAME, ttl_s=60, owner=f"thread-{i}")
        barrier.wait()
        try:
            won.append(lease.acquire())
        except LeaseHeld:
            held.append(i)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(held) == n - 1
    assert LakeLease.read(local_lake, NAME).owner == won[0].owner


def test_background_renewal_keeps_a_long_run_s_lease(local_lake):
    # renewals every 0.1 s keep a 1.5 s lease (a 0.4 s one once lapsed on a loaded machine)
    with LakeLease(local_lake, NAME, ttl_s=1.5, renew_every_s=0.1, owner="long") as lease:
        first = lease.record.expires_at
        time.sleep(3.0)  # twice the ttl
        with pytest.raises(LeaseHeld, match="'long'"):
            LakeLease(local_lake, NAME, ttl_s=60).acquire()
        assert lease.record.expires_at > first
        lease.check()


def test_background_renewal_fails_loudly_when_someone_else_took_the_lease(local_lake):
    lost = []
    lease = LakeLease(local_lake, NAME, ttl_s=30, renew_every_s=0.05, owner="victim",
                      on_lost=lost.append)
    with pytest.raises(LeaseLost, match="held by 'intruder'"):
        with lease:
            os.unlink(lease.uri)  # an operator removed the lease file; another run started
            intruder = LakeLease(local_lake, NAME, ttl_s=30, owner="intruder").acquire()
            deadline = time.monotonic() + 5
            while not lost and time.monotonic() < deadline:
                time.sleep(0.02)
            assert lost and isinstance(lost[0], LeaseLost)
            with pytest.raises(LeaseLost):
                lease.check()
    assert LakeLease.read(local_lake, NAME).owner == "intruder"  # the victim released nothing
    intruder.release()


def test_record_round_trip_and_bad_arguments(local_lake):
    record = LeaseRecord(NAME, "o", "h", 1, "t", acquired_at=1_700_000_000.5, expires_at=1_700_000_060.25)
    assert LeaseRecord.from_bytes(record.to_bytes()) == record
    assert b"2023-11-14T22:13:20.500+00:00" in record.to_bytes()
    for bad in ("../x", "/abs", "a//b", "", "a b"):
        with pytest.raises(ValueError, match="lease name"):
            LakeLease(local_lake, bad, ttl_s=1)
    with pytest.raises(ValueError, match="renew_every_s"):
        LakeLease(local_lake, NAME, ttl_s=1, renew_every_s=2)
    lease = LakeLease(local_lake, NAME, ttl_s=1)
    with pytest.raises(LeaseError, match="not held"):
        lease.renew()
    lease.release()  # not held: nothing to do


def _dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid  # reaped: no process has it (until the kernel reuses it)


def _write_live_record(lake: Lake, host: str, pid: int) -> None:
    now = time.time()
    record = LeaseRecord(NAME, "killed driver", host, pid, "t0", acquired_at=now, expires_at=now + 1800)
    path = os.path.join(lake.root, "_leases", NAME + ".json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(record.to_bytes())


def test_a_live_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(local_lake):
    import socket

    _write_live_record(local_lake, socket.gethostname(), _dead_pid())
    with LakeLease(local_lake, NAME, ttl_s=60, owner="rerun"):
        assert LakeLease.read(local_lake, NAME).owner == "rerun"


def test_a_live_lease_held_on_another_host_keeps_its_ttl(local_lake):
    _write_live_record(local_lake, "another-host", _dead_pid())
    with pytest.raises(LeaseHeld, match="killed driver"):
        LakeLease(local_lake, NAME, ttl_s=60).acquire()
