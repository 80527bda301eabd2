"""`ray job submit -- python jobs/train_daily.py` against a head node started like an operator
would (`ray start --head`, token auth on), then the new registry row is checked. (The replay
evaluation that ends a daily run is covered by the embedded end-to-end test.)"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from deltalake import write_deltalake

from dnr.data.synth import WorldConfig, make_requests
from dnr.registry import Registry
from dnr.storage import Lake
from dnr.testing import RayHead

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def test_daily_job_submitted_to_a_ray_head(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    world = WorldConfig(seed=5, num_users=1_000, num_items=3_000)
    for day in range(3):
        table = make_requests(world, dt.date(2026, 3, 1) + dt.timedelta(days=day), np.arange(300))
        write_deltalake(lake.table_uri("request_logs"), table, partition_by=["ds"], mode="append")

    with RayHead(num_cpus=4) as head:  # its own short temp dir: socket paths are length-limited
        job = head.submit(["python", "jobs/train_daily.py", "--lake", lake.root,
                           "--config", "jobs/configs/local.yaml", "train.max_steps=3",
                           "data.batch_size=64", "gate.enabled=false"], cwd=str(REPO))
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "succeeded" in job.stdout + job.stderr and "[daily] summary" in job.stdout

    (version,) = Registry(lake).versions()
    assert version.status == "candidate" and version.window_start == "2026-03-01"
    assert version.window_end == "2026-03-02" and version.global_step == 3
    assert Path(version.checkpoint_uri, "state.pt").exists()
