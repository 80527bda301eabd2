"""The lake lease on S3 (moto's server): conditional PutObject (If-None-Match / If-Match) gives
one holder at a time, expiry takeover with exactly one winner, and loud renewal failures."""

from __future__ import annotations

import threading
import time

import pytest

from dnr.lease import LakeLease, LeaseHeld, LeaseLost

pytestmark = [pytest.mark.integration, pytest.mark.s3]
NAME = "train_daily/dnr"


def test_acquire_refuse_release_on_s3(s3_lake):
    with LakeLease(s3_lake, NAME, ttl_s=60, owner="run-a") as lease:
        assert lease.uri == f"{s3_lake.root}/_leases/train_daily/dnr.json"
        with pytest.raises(LeaseHeld, match="held by 'run-a'") as info:
            LakeLease(s3_lake, NAME, ttl_s=60, owner="run-b").acquire()
        assert info.value.holder.owner == "run-a"
        lease.renew()
        lease.check()
    assert LakeLease.read(s3_lake, NAME).released_at is not None
    with LakeLease(s3_lake, NAME, ttl_s=60, owner="run-b"):
        assert LakeLease.read(s3_lake, NAME).owner == "run-b"


def test_expired_lease_on_s3_is_taken_over_once_and_the_old_holder_loses_it(s3_lake):
    crashed = LakeLease(s3_lake, NAME, ttl_s=0.3, owner="crashed").acquire()
    time.sleep(0.4)
    n = 6
    barrier, won, held = threading.Barrier(n), [], []

    def contend(i):
        lease = LakeLease(s3_lake, NAME, ttl_s=60, owner=f"contender-{i}")
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
    winner = won[0]
    with pytest.raises(LeaseLost, match=repr(winner.owner)):
        crashed.renew()
    crashed.release()  # no longer ours: the winner's lease stays
    assert LakeLease.read(s3_lake, NAME).owner == winner.owner
    winner.check()
    winner.release()


def test_concurrent_fresh_creates_on_s3_have_one_winner(s3_lake):
    n = 6
    barrier, won = threading.Barrier(n), []

    def contend(i):
        lease = LakeLease(s3_lake, "replay/x", ttl_s=60, owner=f"c{i}")
        barrier.wait()
        try:
            won.append(lease.acquire())
        except LeaseHeld:
            pass

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    won[0].release()


def test_background_renewal_on_s3_keeps_the_lease_then_reports_a_takeover(s3_lake):
    lost = []
    with pytest.raises(LeaseLost):
        with LakeLease(s3_lake, NAME, ttl_s=1.0, renew_every_s=0.1, owner="long",
                       on_lost=lost.append) as lease:
            time.sleep(1.3)  # longer than the ttl: only renewals keep it
            with pytest.raises(LeaseHeld, match="'long'"):
                LakeLease(s3_lake, NAME, ttl_s=60).acquire()
            lease._store._client.delete_object(Bucket=lease._store.bucket, Key=lease._store.key)
            LakeLease(s3_lake, NAME, ttl_s=60, owner="intruder").acquire()
            deadline = time.monotonic() + 5
            while not lost and time.monotonic() < deadline:
                time.sleep(0.05)
            assert lost
    assert LakeLease.read(s3_lake, NAME).owner == "intruder"
