"""Shared fixtures: one local S3 server and one local Ray per test session."""

from __future__ import annotations

import os

import pytest

from dnr.storage import Lake
from dnr.testing import S3Server

#: logical CPUs of the shared test Ray: more than the 2 physical cores so that Train workers
#: (1 CPU each) always leave slots for Ray Data read/map tasks (a full cluster makes reads hang).
TEST_RAY_CPUS = 6


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server as a subprocess; its endpoint and placeholder credentials are exported
    to this process so that Ray workers started later inherit them."""
    server = S3Server().start()
    saved = {k: os.environ.get(k) for k in server.env}
    server.export_env()
    yield server
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def s3_lake(s3_server) -> Lake:
    """A fresh bucket on the local S3 server, as a lake URI."""
    return Lake(f"s3://{s3_server.make_bucket()}/lake")


@pytest.fixture
def local_lake(tmp_path) -> Lake:
    return Lake(str(tmp_path / "lake"))


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    """The one local Ray of the session (started after the S3 env is exported)."""
    import ray
    from ray.data import DataContext

    ray.init(
        num_cpus=TEST_RAY_CPUS,
        object_store_memory=500 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
    )
    DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()
