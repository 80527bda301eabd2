"""No Ray process of a job outlives it: Ctrl-C and SIGTERM stop the embedded Ray's processes with
the driver, and the next job stops those a killed driver (SIGKILL) left behind.

An embedded Ray's agents (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) outlive the raylet
they were started by; everything here is keyed on the job's own session dir, so the shared test
Ray (tests/conftest.py) and other jobs on the machine are never touched.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from deltalake import write_deltalake

from dnr.datasets.synth import make_requests
from dnr.datasets.synth_world import WorldConfig
from dnr.runtime import EXIT_INTERRUPTED, EXIT_TERMINATED, reap_orphaned_sessions, session_processes

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
SESSION = re.compile(rb"(/[^\s\x00]*?/session_[^/\s\x00]+)")


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    """Two small days: the job is stopped long before it could train them."""
    root = tmp_path_factory.mktemp("shutdown") / "lake"
    for day in (dt.date(2024, 1, 1), dt.date(2024, 1, 2)):
        write_deltalake(str(root / "request_logs"), make_requests(WorldConfig(), day, np.arange(300)),
                        partition_by=["ds"], mode="append")
    return root


def _start_job(lake: Path) -> tuple[subprocess.Popen, str]:
    """The daily job on an embedded Ray, once its agents run; returns it and its session dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "AWS_"))}
    job = subprocess.Popen([sys.executable, str(REPO / "jobs" / "train_daily.py"), "--lake", str(lake),
                            "--num-cpus", "2", "train.epochs=50", "validation.fraction=0", "gate.enabled=false"],
                           cwd=lake.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in job.stdout:  # the config is printed once Ray is up
            if line.startswith("[daily] lake"):
                break
        session = _session_of(job.pid)
        deadline = time.monotonic() + 30
        while not _agents(session) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _agents(session), f"no agent of {session} seen"
    except BaseException:
        job.kill()
        raise
    return job, session


def _session_of(pid: int) -> str:
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        found = SESSION.search(Path(f"/proc/{child}/cmdline").read_bytes())
        if found:
            return found.group(1).decode()
    raise AssertionError(f"no Ray process under the job {pid}")


def _titles(pids) -> list[str]:
    titles = []
    for pid in pids:
        try:
            titles.append(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode().strip())
        except OSError:
            pass
    return titles


def _agents(session: str) -> list[str]:
    return [t for t in _titles(session_processes(session)) if t.startswith("ray::") and "Agent" in t]


def _left_after(session: str, wait_s: float = 5.0) -> list[str]:
    deadline = time.monotonic() + wait_s
    while session_processes(session) and time.monotonic() < deadline:
        time.sleep(0.2)
    return _titles(session_processes(session))


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, EXIT_INTERRUPTED), (signal.SIGTERM, EXIT_TERMINATED)])
def test_no_ray_process_outlives_a_job_stopped_by_a_signal(lake, sig, code):
    job, session = _start_job(lake)
    try:
        job.send_signal(sig)
        assert job.wait(60) == code
        assert _left_after(session) == []
    finally:
        job.kill()
        job.wait()
        reap_orphaned_sessions()


def test_the_next_job_stops_what_a_killed_driver_left_behind(lake):
    job, session = _start_job(lake)
    job.kill()  # SIGKILL: nothing of the job runs after it
    job.wait()
    time.sleep(2)
    assert _agents(session), "the agents outlive a killed driver: what the next job must stop"
    # what the next embedded job does first (dnr.runtime.start_ray), and touches only dead drivers' sessions
    assert session in reap_orphaned_sessions()
    assert _left_after(session, wait_s=1.0) == []
