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


class RayHead:
    """A Ray head node started like an operator would (``ray start --head --block``) in its own
    process group, on free ports, so that several Rays can share one machine and stopping this
    one (``stop()``) never touches another (``ray stop`` would stop every Ray on the machine).

    Ray 2.60 turns token auth on for such clusters: ``env`` carries ``RAY_AUTH_MODE=token`` and
    the dashboard address for ``ray job submit``; the token itself stays in ``~/.ray/auth_token``
    (or ``RAY_AUTH_TOKEN_PATH``), never in the environment or a log.
    """

    def __init__(self, num_cpus: int = 4, temp_dir: str | None = None):
        import tempfile

        self.num_cpus = num_cpus
        self._own_temp_dir = temp_dir is None
        self.temp_dir = temp_dir or tempfile.mkdtemp(prefix="rayhead-")
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        self.env = {"RAY_AUTH_MODE": "token", "RAY_API_SERVER_ADDRESS": self.dashboard_url}
        self._proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 180.0) -> "RayHead":
        ports = {"--port": self.gcs_port, "--dashboard-port": self.dashboard_port,
                 "--dashboard-agent-listen-port": free_port(),
                 "--dashboard-agent-grpc-port": free_port(),
                 "--runtime-env-agent-port": free_port(), "--metrics-export-port": free_port(),
                 "--node-manager-port": free_port(), "--object-manager-port": free_port(),
                 "--ray-client-server-port": free_port()}
        cmd = [os.path.join(os.path.dirname(sys.executable), "ray"), "start", "--head", "--block",
               f"--num-cpus={self.num_cpus}", f"--object-store-memory={500 * 1024**2}", "--include-dashboard=true", "--disable-usage-stats",
               "--dashboard-host=127.0.0.1", f"--temp-dir={self.temp_dir}",
               *(f"{flag}={port}" for flag, port in ports.items())]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True, env={**os.environ, **self.env})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"ray start --head exited with code {self._proc.returncode}")
            if self._jobs_api_ready():
                return self
            time.sleep(1.0)
        self.stop()
        raise TimeoutError(f"Ray head did not accept jobs on {self.dashboard_url} in {timeout_s}s")

    def _jobs_api_ready(self) -> bool:
        result = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "ray"), "job", "list"],
            env={**os.environ, **self.env}, capture_output=True, text=True, timeout=60)
        return result.returncode == 0

    def stop(self) -> None:
        import signal

        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc = None
        if self._own_temp_dir:
            import shutil

            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> "RayHead":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def submit(self, entrypoint: list[str], cwd: str, timeout_s: float = 900.0,
               extra_env: dict | None = None) -> subprocess.CompletedProcess:
        """``ray job submit --working-dir <cwd> -- <entrypoint>``, waiting for the job to end.

        The head's job agent registers a few seconds after the API answers: a submission refused
        with "No available agent" is retried until it is accepted.
        """
        cmd = [os.path.join(os.path.dirname(sys.executable), "ray"), "job", "submit",
               "--working-dir", cwd, "--", *entrypoint]
        env = {**os.environ, **self.env, **(extra_env or {})}
        deadline = time.monotonic() + timeout_s
        while True:
            result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                                    timeout=max(deadline - time.monotonic(), 1))
            if "No available agent" not in result.stderr or time.monotonic() > deadline:
                return result
            time.sleep(3.0)
