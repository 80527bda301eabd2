"""The lake: one root URI (local directory or ``s3://bucket/prefix``) holding every table.

The same code serves local paths and S3. Credentials and the endpoint come from the standard
AWS environment variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``,
``AWS_ENDPOINT_URL``); they are passed to deltalake, pyarrow and s3fs but never printed:
``Lake.__repr__`` shows only the root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

TABLES = ("request_logs", "quarantine", "model_registry", "replay_reports")


def s3_endpoint() -> str | None:
    """The S3 endpoint of the environment (AWS SDK variables), None for AWS itself."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def s3_region() -> str:
    """The region of the environment (AWS SDK variables), us-east-1 when unset."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


@dataclass(frozen=True)
class Lake:
    """Root of the lake; ``Lake("./lake")`` or ``Lake("s3://bucket/prefix")``."""

    root: str

    def __post_init__(self):
        root = self.root.rstrip("/")
        if not self.is_s3_uri(root):
            if "://" in root and not root.startswith("file://"):
                raise ValueError(f"lake URI {self.root!r}: only local paths and s3:// are supported")
            root = os.path.abspath(root.removeprefix("file://"))
        object.__setattr__(self, "root", root)

    @staticmethod
    def is_s3_uri(uri: str) -> bool:
        return uri.startswith(("s3://", "s3a://"))

    @property
    def is_s3(self) -> bool:
        return self.is_s3_uri(self.root)

    def uri(self, *parts: str) -> str:
        """URI of a path inside the lake, e.g. ``lake.uri("checkpoints", run)``."""
        return "/".join([self.root, *(p.strip("/") for p in parts)])

    def table_uri(self, name: str) -> str:
        if name not in TABLES:
            raise ValueError(f"unknown table {name!r}; the lake holds {TABLES}")
        return self.uri(name)

    def storage_options(self) -> dict[str, str]:
        """Options for deltalake (its Rust object store). Empty for local lakes.

        Credentials are read by deltalake from the environment itself; we only add what the
        environment cannot express: plain-HTTP endpoints (a local S3 server) and the commit
        protocol. S3 has no atomic rename, so commits use conditional puts (``If-None-Match``),
        which AWS S3 and moto support; no lock table is needed.
        """
        if not self.is_s3:
            return {}
        opts = {"AWS_REGION": s3_region(), "conditional_put": "etag"}
        endpoint = s3_endpoint()
        if endpoint:
            opts["AWS_ENDPOINT_URL"] = endpoint
            if endpoint.startswith("http://"):
                opts["AWS_ALLOW_HTTP"] = "true"
        return opts

    def filesystem(self) -> pafs.FileSystem:
        """A pyarrow filesystem for Parquet reads and writes outside Delta (Ray Data, reports)."""
        if not self.is_s3:
            return pafs.LocalFileSystem()
        endpoint = s3_endpoint()
        kwargs = {"region": s3_region()}
        if endpoint:
            parsed = urlparse(endpoint)
            kwargs["endpoint_override"] = parsed.netloc or endpoint
            kwargs["scheme"] = parsed.scheme or "https"
        return pafs.S3FileSystem(**kwargs)

    def relative(self, uri: str) -> str:
        """How a location inside the lake is stored in its tables: relative to the root, so a
        lake copied or synced elsewhere (another directory, S3) stays self-contained. A location
        outside the lake is kept as it is."""
        prefix = self.root + "/"
        return uri[len(prefix):] if uri.startswith(prefix) else uri

    def resolve(self, stored: str) -> str:
        """The location of a stored path: relative ones are under this lake's root."""
        if "://" in stored or stored.startswith("/"):
            return stored
        return self.uri(stored)

    def fs_path(self, uri: str) -> str:
        """Strip the scheme: pyarrow filesystems take ``bucket/key`` for S3."""
        return uri.split("://", 1)[1] if self.is_s3_uri(uri) else uri

    def read_table(self, name: str, columns: list[str] | None = None):
        """The newest snapshot of the lake's table ``name`` as a pyarrow Table, for scripts.

        The file list comes from the Delta log (deltalake), the data is read by pyarrow's own
        filesystem. A process that read data through deltalake's filesystem aborts at exit in
        most runs (delta-rs #2184; ``bench/exit_abort.py``); one that reads this way does not.
        Only the reader features this project's tables use are supported: a table with
        deletion vectors or column mapping is refused with its name.
        """
        import pyarrow.dataset as pds
        from deltalake import DeltaTable

        table = DeltaTable(self.table_uri(name), storage_options=self.storage_options())
        features = set(table.protocol().reader_features or ())
        if features:
            raise ValueError(f"{self.table_uri(name)} uses the Delta reader feature(s) {sorted(features)}, "
                             "which Lake.read_table does not apply; read it with deltalake instead")
        schema = pa.schema(table.schema().to_arrow())
        files = [self.fs_path(uri) for uri in table.file_uris()]
        if not files:
            return schema.empty_table().select(columns) if columns else schema.empty_table()
        partitioning = pds.partitioning(
            pa.schema([schema.field(c) for c in table.metadata().partition_columns]), flavor="hive")
        data = pds.dataset(files, schema=schema, format="parquet", filesystem=self.filesystem(),
                           partitioning=partitioning, partition_base_dir=self.fs_path(self.table_uri(name)))
        return data.to_table(columns=columns)

    def __repr__(self) -> str:
        return f"Lake({self.root!r})"
