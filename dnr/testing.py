"""Local stand-ins for production services, used by tests, benchmarks and demos.

``S3Server`` runs moto's S3-compatible server as a subprocess on 127.0.0.1 (the in-process
threaded server deadlocks with deltalake's Rust client) and exposes it through the standard
AWS environment variables, so deltalake, pyarrow, s3fs and Ray workers all reach it the way
they would reach AWS.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid

_FAKE_CREDENTIALS = {
    # moto accepts any credentials; these are placeholders, not secrets.
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3Server:
    """``with S3Server() as s3: s3.make_bucket()``; ``s3.env`` holds the variables to export."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {**_FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}
        self._proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 30.0) -> "S3Server":
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited with code {self._proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"moto server did not listen on port {self.port} in {timeout_s}s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None

    def make_bucket(self, name: str | None = None) -> str:
        import boto3

        name = name or f"lake-{uuid.uuid4().hex[:10]}"
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.env["AWS_REGION"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )
        client.create_bucket(Bucket=name)
        return name

    def export_env(self) -> None:
        os.environ.update(self.env)

    def __enter__(self) -> "S3Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
