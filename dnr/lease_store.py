"""Where a lake lease is kept, and its conditional writes: a file on a local filesystem (hard
link to create, ``flock`` + rename to replace) or an S3 object (conditional PutObject with
``If-None-Match`` / ``If-Match``). :mod:`dnr.lease` holds the protocol on top of them.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import uuid

from dnr.storage import Lake, s3_endpoint, s3_region

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")


class Conflict(Exception):
    """A conditional write lost: the stored version is not the one expected."""


class LocalStore:
    """Lease file on a local filesystem; versions are the file's bytes."""

    def __init__(self, path: str):
        self.path = path
        self.uri = path

    def read(self) -> tuple[bytes, bytes] | None:
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        return raw, raw

    def _tmp(self, raw: bytes) -> str:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = f"{self.path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def create(self, raw: bytes) -> bytes:
        tmp = self._tmp(raw)
        try:
            os.link(tmp, self.path)  # atomic create-if-absent, content complete when visible
        except FileExistsError:
            raise Conflict from None
        finally:
            os.unlink(tmp)
        return raw

    def replace(self, raw: bytes, expected: bytes) -> bytes:
        tmp = self._tmp(raw)
        try:
            with self._locked():
                current = self.read()
                if current is None or current[1] != expected:
                    raise Conflict
                os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return raw

    @contextlib.contextmanager
    def _locked(self):
        import fcntl

        fd = os.open(self.path + ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if this process dies
            yield
        finally:
            os.close(fd)


class S3Store:
    """Lease object on S3; versions are ETags, writes are conditional PutObjects."""

    def __init__(self, uri: str):
        self.uri = uri
        self.bucket, self.key = uri.split("://", 1)[1].split("/", 1)
        self._client = _s3_client(s3_endpoint(), s3_region())

    @staticmethod
    def _code(err) -> str:
        return str(err.response.get("Error", {}).get("Code", ""))

    def read(self) -> tuple[bytes, str] | None:
        from botocore.exceptions import ClientError

        try:
            obj = self._client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as err:
            if self._code(err) in ("NoSuchKey", "404"):
                return None
            raise
        return obj["Body"].read(), obj["ETag"]

    def _put(self, raw: bytes, **condition) -> str:
        from botocore.exceptions import ClientError

        try:
            return self._client.put_object(Bucket=self.bucket, Key=self.key, Body=raw,
                                           ContentType="application/json", **condition)["ETag"]
        except ClientError as err:
            # 412: the condition failed; 409: a concurrent conditional write to the same key
            # won; 404: If-Match on a key that is gone
            if self._code(err) in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey",
                                   "412", "409", "404"):
                raise Conflict from None
            raise

    def create(self, raw: bytes) -> str:
        return self._put(raw, IfNoneMatch="*")

    def replace(self, raw: bytes, expected: str) -> str:
        return self._put(raw, IfMatch=expected)


@functools.lru_cache(maxsize=None)
def _s3_client(endpoint: str | None, region: str):
    """One client per endpoint and region: building one costs ~0.5 s of CPU; clients are
    thread-safe and refresh expiring credentials (IRSA, instance profiles) themselves."""
    import botocore.session
    from botocore.config import Config

    return botocore.session.get_session().create_client(
        "s3", region_name=region, endpoint_url=endpoint,
        config=Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=10,
                      read_timeout=30))


def open_store(lake: Lake, name: str):
    """The store of lease ``name`` in ``lake`` (``<lake>/_leases/<name>.json``)."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"lease name {name!r}: use [A-Za-z0-9._-] segments joined by '/'")
    uri = lake.uri("_leases", f"{name}.json")
    return S3Store(uri) if lake.is_s3 else LocalStore(uri)
