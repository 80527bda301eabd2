"""A lease in the lake: at most one holder per name at a time, with an expiry.

The daily schedule (a cron, a RayCronJob) has no reliable concurrency policy: a slow run and
tomorrow's run, or a manual re-run, could train on the same lake at once. Every run therefore
holds ``<lake>/_leases/<name>.json`` while it works::

    from dnr.lease import LakeLease, LeaseHeld

    with LakeLease(lake, f"train_daily/{cfg.train.model_name}", ttl_s=1800,
                   owner=run_name, renew_every_s=300) as lease:
        ...                      # train, evaluate
        lease.check()            # raises LeaseLost if another run took the lease over
        ...                      # commit (register, promote)

API:

* ``LakeLease(lake, name, ttl_s, owner=None, renew_every_s=None, on_lost=None)``; ``name`` is
  a path-like id (``[A-Za-z0-9._-]`` segments joined by ``/``).
* ``acquire()`` (``__enter__``): writes the record ``{name, owner, host, pid, token,
  acquired_at, expires_at, renewed_at, released_at}`` (times in ISO 8601 UTC) if no live lease
  exists, takes over an expired or released one, or a live one whose holder ran on this host
  and whose process is gone (a driver killed with SIGKILL; a holder on another host keeps its
  TTL, since its liveness cannot be seen from here), and raises ``LeaseHeld`` (with ``.holder``,
  a ``LeaseRecord``) naming the holder, its host and pid, and its expiry otherwise.
* ``renew()``: moves the expiry to now + ``ttl_s``; raises ``LeaseLost`` if the record is no
  longer ours. A lease that expired but that nobody took over is renewed (the compare-and-swap
  below decides, not the clock). ``renew_every_s`` starts a daemon thread that renews at that
  interval; if a renewal finds the lease taken, the thread logs an error, calls ``on_lost(err)``
  if given and stops; ``check()`` and ``__exit__`` then raise that ``LeaseLost``. Transient
  storage errors are logged and retried at the next interval.
* ``check()``: raises ``LeaseLost`` unless the stored record is still ours and unexpired.
* ``release()`` (``__exit__``): replaces our record by a released one (``released_at`` set,
  expired), only if it is still ours; the file stays as a record of the last run.
* ``LakeLease.read(lake, name)``: the current ``LeaseRecord`` or None, for operators.

Atomicity. Every change is a create-if-absent or a compare-and-swap on the stored version:

* **Local lake**: create = write a temporary file, then ``os.link`` it to the lease path (the
  directory entry appears with its full content, or ``FileExistsError`` if one exists: the
  ``O_CREAT|O_EXCL`` guarantee without a window where a reader sees an empty file). Takeover,
  renewal and release compare the current bytes with the version read and ``os.replace`` a new
  file over it, under an exclusive ``fcntl.flock`` on ``<name>.json.lock``: a rename alone
  cannot compare-and-swap, and the kernel drops a crashed holder's flock, so no stale lock can
  block tomorrow's run. Valid on one host's filesystem (flock on network filesystems varies:
  use S3 for a lake shared by several hosts).
* **S3**: create = ``PutObject`` with ``If-None-Match: *``; takeover, renewal and release =
  ``PutObject`` with ``If-Match: <ETag read>``; a 412 (or 409 ``ConditionalRequestConflict``)
  means another writer won. AWS S3 supports both headers (since 2024-08 and 2024-11) and so
  does moto's server (tests/integration/test_lease_s3.py). pyarrow's ``S3FileSystem`` cannot
  send them (it silently overwrote in our check), so this module uses ``botocore`` (already
  installed with s3fs through aiobotocore, declared in pyproject.toml), with the lake's
  endpoint and region and the standard credential chain; credentials are never logged.

Expiry compares the reader's clock with the holder's ``expires_at``: keep ``ttl_s`` far above
any clock skew between hosts, and ``renew_every_s`` at most a third of it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from dnr.lease_store import Conflict, open_store
from dnr.storage import Lake

log = logging.getLogger(__name__)


class LeaseError(RuntimeError):
    """Base of the lease errors."""


class LeaseHeld(LeaseError):
    """Another holder has a live lease; ``.holder`` is its record."""

    def __init__(self, uri: str, holder: "LeaseRecord"):
        self.holder = holder
        left = holder.expires_at - time.time()
        super().__init__(
            f"lease {holder.name!r} ({uri}) is held by {holder.owner!r} (host {holder.host}, pid "
            f"{holder.pid}) since {_iso(holder.acquired_at)}, until {_iso(holder.expires_at)} "
            f"({left:.0f}s left): another run is in progress on this lake. If that run is dead, "
            f"its lease expires by itself; the next run after {_iso(holder.expires_at)} takes it over")


class LeaseLost(LeaseError):
    """Our lease was taken over (or removed) by someone else: stop before committing anything."""


@dataclass(frozen=True)
class LeaseRecord:
    """What the lease file holds. Times are Unix seconds here, ISO 8601 UTC in the file."""

    name: str
    owner: str
    host: str
    pid: int
    token: str
    """Unique per acquisition: tells two holders with the same owner apart."""
    acquired_at: float
    expires_at: float
    renewed_at: float | None = None
    released_at: float | None = None

    def live(self, now: float | None = None) -> bool:
        return self.released_at is None and (time.time() if now is None else now) < self.expires_at

    def to_bytes(self) -> bytes:
        d = dataclasses.asdict(self)
        for key in ("acquired_at", "expires_at", "renewed_at", "released_at"):
            d[key] = _iso(d[key]) if d[key] is not None else None
        return (json.dumps(d, indent=1) + "\n").encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> "LeaseRecord":
        d = json.loads(raw)
        for key in ("acquired_at", "expires_at", "renewed_at", "released_at"):
            d[key] = dt.datetime.fromisoformat(d[key]).timestamp() if d.get(key) else None
        return cls(**d)


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="milliseconds")


class LakeLease:
    """``with LakeLease(lake, "train_daily/dnr", ttl_s=1800):`` (see the module docstring)."""

    def __init__(self, lake: Lake, name: str, ttl_s: float, owner: str | None = None,
                 renew_every_s: float | None = None,
                 on_lost: Callable[[LeaseLost], None] | None = None):
        if ttl_s <= 0:
            raise ValueError(f"ttl_s={ttl_s}: must be > 0")
        if renew_every_s is not None and not 0 < renew_every_s < ttl_s:
            raise ValueError(f"renew_every_s={renew_every_s}: must be in (0, ttl_s={ttl_s})")
        self.lake, self.name, self.ttl_s = lake, name, float(ttl_s)
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.owner = owner or f"{self.host}:{self.pid}"
        self.renew_every_s, self.on_lost = renew_every_s, on_lost
        self._store = open_store(lake, name)
        self.record: LeaseRecord | None = None
        self._version = None
        self._lost: LeaseLost | None = None
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def daily(cls, lake: Lake, model_name: str, ttl_s: float, owner: str) -> "LakeLease":
        """The daily run's lease on a model line, ``train_daily/<model_name>``, renewed in the
        background every third of its ttl: what the run and its demo-world set-up both hold."""
        return cls(lake, f"train_daily/{model_name}", ttl_s=ttl_s, owner=owner, renew_every_s=ttl_s / 3)

    @property
    def uri(self) -> str:
        return self._store.uri

    @staticmethod
    def read(lake: Lake, name: str) -> LeaseRecord | None:
        current = open_store(lake, name).read()
        return LeaseRecord.from_bytes(current[0]) if current else None

    # ---- acquire / renew / release ----

    def acquire(self) -> "LakeLease":
        if self.record is not None:
            raise LeaseError(f"lease {self.name!r} is already held by this object")
        now = time.time()
        mine = LeaseRecord(self.name, self.owner, self.host, self.pid, uuid.uuid4().hex,
                           acquired_at=now, expires_at=now + self.ttl_s)
        # A lost race sends us round again: the next read shows the winner's live lease.
        for _ in range(5):
            try:
                self._version = self._store.create(mine.to_bytes())
                return self._held(mine, "acquired")
            except Conflict:
                pass
            current = self._store.read()
            if current is None:
                continue  # removed in between (an operator): try creating again
            theirs = LeaseRecord.from_bytes(current[0])
            gone = self._holder_gone(theirs)
            if theirs.live() and not gone:
                raise LeaseHeld(self.uri, theirs)
            try:
                self._version = self._store.replace(mine.to_bytes(), current[1])
            except Conflict:
                continue
            how = ("released" if theirs.released_at else f"held by pid {theirs.pid} on this host, "
                   "which is gone" if gone else f"expired at {_iso(theirs.expires_at)}")
            return self._held(mine, f"took over ({theirs.owner!r}'s lease {how})")
        current = self._store.read()
        if current is not None:
            raise LeaseHeld(self.uri, LeaseRecord.from_bytes(current[0]))
        raise LeaseError(f"lease {self.name!r} ({self.uri}): could not acquire after 5 attempts")

    def _holder_gone(self, record: LeaseRecord) -> bool:
        """The holder ran on this host and its process no longer exists (a driver killed with
        SIGKILL): its lease need not be waited out. Holders on other hosts keep their TTL."""
        if record.host != self.host or record.pid == self.pid or record.released_at is not None:
            return False
        try:
            os.kill(record.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False

    def _held(self, record: LeaseRecord, how: str) -> "LakeLease":
        self.record, self._lost = record, None
        log.info("lease %s %s by %s until %s", self.name, how, self.owner, _iso(record.expires_at))
        if self.renew_every_s is not None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._renew_loop, daemon=True,
                                            name=f"lease-renew:{self.name}")
            self._thread.start()
        return self

    def renew(self) -> float:
        """Extend the expiry to now + ttl_s; returns it. Raises LeaseLost if no longer ours."""
        with self._mutex:
            if self._lost is not None:
                raise self._lost
            if self.record is None:
                raise LeaseError(f"lease {self.name!r} is not held")
            now = time.time()
            renewed = dataclasses.replace(self.record, expires_at=now + self.ttl_s, renewed_at=now)
            try:
                self._version = self._store.replace(renewed.to_bytes(), self._version)
            except Conflict:
                self._lost = self._lost_error("renewing")
                raise self._lost from None
            self.record = renewed
            return renewed.expires_at

    def check(self) -> None:
        """Raise LeaseLost unless the stored lease is still ours and unexpired."""
        if self._lost is not None:
            raise self._lost
        if self.record is None:
            raise LeaseError(f"lease {self.name!r} is not held")
        current = self._store.read()
        if current is None or current[1] != self._version:
            raise self._lost_error("checking")
        if not self.record.live():
            raise LeaseLost(f"lease {self.name!r} ({self.uri}) expired at "
                            f"{_iso(self.record.expires_at)} without renewal")

    def release(self) -> None:
        """Mark our lease released, only if it is still ours; a no-op when not held."""
        self._stop_thread()
        with self._mutex:
            if self.record is None:
                return
            now = time.time()
            done = dataclasses.replace(self.record, expires_at=now, released_at=now)
            try:
                self._store.replace(done.to_bytes(), self._version)
                log.info("lease %s released by %s", self.name, self.owner)
            except Conflict:
                log.warning("lease %s: not released, it is no longer ours (%s)", self.name,
                            self._lost_error("releasing"))
            self.record, self._version = None, None

    def _lost_error(self, doing: str) -> LeaseLost:
        current = self._store.read()
        if current is None:
            who = "the lease file was removed"
        else:
            theirs = LeaseRecord.from_bytes(current[0])
            who = (f"now held by {theirs.owner!r} (host {theirs.host}, pid {theirs.pid}) until "
                   f"{_iso(theirs.expires_at)}")
        return LeaseLost(f"lease {self.name!r} ({self.uri}) lost while {doing}: {who}; this run "
                         f"({self.owner!r}) must not commit anything")

    # ---- background renewal ----

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.renew_every_s):
            try:
                self.renew()
            except LeaseLost as err:
                log.error("%s", err)
                if self.on_lost is not None:
                    self.on_lost(err)
                return
            except Exception as err:  # storage hiccup: the next interval retries
                log.warning("lease %s: renewal failed (%s: %s); retrying in %.0fs", self.name,
                            type(err).__name__, err, self.renew_every_s)

    def _stop_thread(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def __enter__(self) -> "LakeLease":
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        lost = self._lost
        self.release()
        if lost is not None and exc_type is None:
            raise lost

    def __repr__(self) -> str:
        return f"LakeLease({self.uri!r}, owner={self.owner!r}, held={self.record is not None})"
