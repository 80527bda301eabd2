"""Local stand-ins for production services, used by tests, benchmarks and demos.

``S3Server`` runs moto's S3-compatible server as a subprocess on 127.0.0.1 (the in-process
threaded server deadlocks with deltalake's Rust client) and exposes it through the standard
AWS environment variables, so deltalake, pyarrow, s3fs and Ray workers all reach it the way
they would reach AWS. Its access log tells which objects a run really read.

``RayHead`` starts a Ray cluster the way an operator would (``ray start --head``, then
``ray start --address=...`` per worker node), each node in its own process group, temp dir and
ports, so that several Rays share one machine and stopping one never touches another.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from urllib.parse import unquote

_FAKE_CREDENTIALS = {
    # moto accepts any credentials; these are placeholders, not secrets.
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}
#: a request line of the access log moto's (werkzeug) server writes, e.g.
#: ``127.0.0.1 - - [21/Nov/2026 04:22:11] "GET /bucket/key%20a?x=1 HTTP/1.1" 200 -``
_ACCESS_LINE = re.compile(rb'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[0-9.]+" (?P<status>[0-9]{3})')
#: werkzeug colours every status but 200 with ANSI escapes, even into a file: a ranged read is
#: ``"\x1b[35m\x1b[1mGET /bucket/key HTTP/1.1\x1b[0m" 206 -``
_ANSI_ESCAPE = re.compile(rb"\x1b\[[0-9;]*m")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class S3Request:
    """One request the S3 server answered."""

    method: str
    path: str
    """``bucket/key`` decoded (what ``Lake.fs_path`` gives); just ``bucket`` for bucket requests."""
    status: int


def parse_access_log(lines: list[bytes]) -> list[S3Request]:
    """The requests in lines of moto's access log, oldest first; banners and a partly
    written last line are skipped."""
    found = []
    for line in lines:
        match = _ACCESS_LINE.search(_ANSI_ESCAPE.sub(b"", line))
        if match is None or not line.endswith(b"\n"):
            continue
        path = unquote(match["target"].decode().split("?", 1)[0]).strip("/")
        found.append(S3Request(match["method"].decode(), path, int(match["status"])))
    return found


class S3Server:
    """``with S3Server() as s3: s3.make_bucket()``; ``s3.env`` holds the variables to export.

    ``mark = s3.log_offset(); ...; s3.objects_read("bucket/prefix", since=mark)`` names the
    objects whose bytes were fetched meanwhile, by any process (path-style addressing, which
    clients use with a custom endpoint).
    """

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {**_FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}
        self._proc: subprocess.Popen | None = None
        self._log_dir: str | None = None

    @property
    def log_path(self) -> str:
        if self._log_dir is None:
            raise RuntimeError("the S3 server is not started")
        return os.path.join(self._log_dir, "access.log")

    def start(self, timeout_s: float = 30.0) -> "S3Server":
        self._log_dir = tempfile.mkdtemp(prefix="moto-")
        with open(self.log_path, "wb") as log:  # the child keeps its own descriptor
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT,
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
        if self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = None

    def log_offset(self) -> int:
        """The end of the access log now: pass it as ``since`` to see only later requests."""
        return os.path.getsize(self.log_path)

    def requests(self, since: int = 0) -> list[S3Request]:
        """Every request answered after log offset ``since``, oldest first."""
        with open(self.log_path, "rb") as log:
            log.seek(since)
            lines = log.read().splitlines(keepends=True)
        return parse_access_log(lines)

    def objects_read(self, prefix: str, since: int = 0) -> set[str]:
        """``bucket/key`` of the objects under ``prefix`` (``bucket/...``) whose bytes were
        fetched (a successful GET, whole or ranged) after log offset ``since``."""
        return {r.path for r in self.requests(since)
                if r.method == "GET" and r.status in (200, 206) and r.path.startswith(prefix)}

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


def _ray_cli() -> str:
    return os.path.join(os.path.dirname(sys.executable), "ray")


#: environment variable that every process of one RayHead cluster inherits, with its id as value
_CLUSTER_MARKER = "DNR_TEST_RAY_CLUSTER"


class RayNode:
    """One Ray node: ``ray start --block`` in its own process group, its own short temp dir
    (socket paths are length-limited) and free ports. Made by :class:`RayHead`."""

    def __init__(self, role_args: list[str], num_cpus: int, resources: dict[str, float] | None,
                 env: dict[str, str]):
        self.num_cpus = num_cpus
        self.resources = dict(resources or {})
        self.temp_dir = tempfile.mkdtemp(prefix="raynode-")
        self._role_args = role_args
        self._env = env
        self._proc: subprocess.Popen | None = None

    def start(self) -> "RayNode":
        ports = {flag: free_port() for flag in (
            "--node-manager-port", "--object-manager-port", "--metrics-export-port",
            "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port")}
        cmd = [_ray_cli(), "start", "--block", *self._role_args, f"--num-cpus={self.num_cpus}",
               f"--resources={json.dumps(self.resources)}",
               f"--object-store-memory={500 * 1024**2}", "--disable-usage-stats",
               f"--temp-dir={self.temp_dir}", *(f"{flag}={port}" for flag, port in ports.items())]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True, env={**os.environ, **self._env})
        return self

    def check_running(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            code = self._proc.returncode if self._proc is not None else "(never started)"
            raise RuntimeError(f"ray start {' '.join(self._role_args[:1])} exited with code {code}")

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM to the node's process group, SIGKILL to what is left of it after ``grace_s``
        (a head's GCS takes up to a minute to exit gracefully; a test cluster needs no grace)."""
        if self._proc is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self._proc.pid, sig)
                except ProcessLookupError:  # the whole group is gone
                    break
                try:
                    self._proc.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    pass
        self._proc = None
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class RayHead:
    """A Ray cluster on this machine, started as an operator would: ``ray start --head`` here,
    ``ray start --address=<head>`` in :meth:`add_worker`; ``stop()`` ends every process of this
    cluster and no other (``ray stop`` would stop every Ray on the machine)::

        with RayHead(num_cpus=4, env=s3.env) as head:
            head.add_worker(num_cpus=2, resources={"trainer": 2})
            job = head.submit(["python", "jobs/train_daily.py", ...], cwd=repo)

    ``env`` reaches every process of the cluster through the environment of its nodes (job
    drivers, Train workers, Ray Data tasks), never through a command line: e.g. the S3
    endpoint and credentials of an :class:`S3Server`. Each process also inherits a variable
    unique to this cluster, by which :meth:`processes` finds them.

    The cluster runs with token auth (``RAY_AUTH_MODE=token``), as Ray 2.60 recommends, and a
    token of its own: a fresh random one in a 0600 file of this cluster, named by
    ``RAY_AUTH_TOKEN_PATH`` in ``node_env`` and ``client_env`` (the path, never the token, is in
    the environment; nothing logs it). So a test needs no ``~/.ray/auth_token`` (a fresh machine
    has none, and ``ray start`` refuses to start without one) and never writes one.
    ``client_env`` also carries the dashboard address for ``ray job submit`` and ``ray list``.
    """

    def __init__(self, num_cpus: int = 4, resources: dict[str, float] | None = None,
                 env: dict[str, str] | None = None):
        self.cluster_id = uuid.uuid4().hex
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        self._token_dir = tempfile.mkdtemp(prefix="raytoken-")
        token_path = os.path.join(self._token_dir, "auth_token")
        with os.fdopen(os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(secrets.token_hex(32))
        auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token_path}
        self.client_env = {**auth, "RAY_API_SERVER_ADDRESS": self.dashboard_url}
        self.node_env = {**(env or {}), **auth, _CLUSTER_MARKER: self.cluster_id}
        self.head = RayNode(["--head", f"--port={self.gcs_port}", f"--dashboard-port={self.dashboard_port}",
                             "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                             f"--ray-client-server-port={free_port()}"], num_cpus, resources, self.node_env)
        self.workers: list[RayNode] = []

    def start(self, timeout_s: float = 180.0) -> "RayHead":
        self.head.start()
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                self.head.check_running()
                if self._cli("job", "list").returncode == 0:
                    return self
                time.sleep(1.0)
            raise TimeoutError(f"Ray head did not accept jobs on {self.dashboard_url} in {timeout_s}s")
        except BaseException:
            self.stop()
            raise

    def add_worker(self, num_cpus: int, resources: dict[str, float] | None = None,
                   timeout_s: float = 180.0) -> RayNode:
        """Start a worker node joined to this head; returns once the cluster lists it alive."""
        node = RayNode([f"--address={self.address}"], num_cpus, resources, self.node_env).start()
        self.workers.append(node)
        deadline = time.monotonic() + timeout_s
        error = None
        while time.monotonic() < deadline:
            node.check_running()
            try:
                if len([n for n in self.nodes() if n["state"] == "ALIVE"]) == 1 + len(self.workers):
                    return node
            except RuntimeError as e:  # the state API may fail while a node registers
                error = e
            time.sleep(1.0)
        raise TimeoutError(f"worker node did not join {self.address} in {timeout_s}s") from error

    def nodes(self) -> list[dict]:
        """Ray's state API (``ray list nodes``): ``node_id``, ``is_head_node``, ``state``,
        ``resources_total``... of every node the cluster has known."""
        return self._list("nodes")

    def actors(self, class_name: str) -> list[dict]:
        """Ray's state API (``ray list actors``): the actors of a class, dead ones included,
        each with the ``node_id`` it was placed on."""
        return self._list("actors", f"class_name={class_name}")

    def _list(self, kind: str, *filters: str, attempts: int = 3) -> list[dict]:
        for _ in range(attempts):  # the state API can answer nothing while a node (un)registers
            result = self._cli("list", kind, f"--address={self.dashboard_url}", "--format=json",
                               "--limit=10000", *(f"--filter={f}" for f in filters))
            try:
                if result.returncode == 0:
                    return json.loads(result.stdout)
            except json.JSONDecodeError:
                pass
            time.sleep(1.0)
        raise RuntimeError(f"ray list {kind} failed ({result.returncode}): "
                           f"{result.stdout[-2000:]!r} {result.stderr[-2000:]!r}")

    def _cli(self, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess:
        return subprocess.run([_ray_cli(), *args], env={**os.environ, **self.client_env},
                              capture_output=True, text=True, timeout=timeout_s)

    def processes(self) -> list[int]:
        """Pids of the live processes of this cluster (every one inherits its marker variable)."""
        marker = f"{_CLUSTER_MARKER}={self.cluster_id}".encode()
        pids = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as f:
                    if marker in f.read().split(b"\0"):
                        pids.append(int(entry.name))
            except OSError:  # gone meanwhile, or another user's
                continue
        return pids

    def stop(self, timeout_s: float = 30.0) -> None:
        """Worker nodes first, then the head; then whatever process of this cluster outlived its
        node (found by the marker) is killed, so that nothing is left."""
        for node in [*self.workers, self.head]:
            node.stop()
        deadline = time.monotonic() + timeout_s
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self._token_dir, ignore_errors=True)

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
        cmd = [_ray_cli(), "job", "submit", "--working-dir", cwd, "--", *entrypoint]
        env = {**os.environ, **self.client_env, **(extra_env or {})}
        deadline = time.monotonic() + timeout_s
        while True:
            result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                                    timeout=max(deadline - time.monotonic(), 1))
            if "No available agent" not in result.stderr or time.monotonic() > deadline:
                return result
            time.sleep(3.0)
