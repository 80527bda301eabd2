"""`ray job submit -- python jobs/train_daily.py` on a two-node cluster started like an operator
would (`ray start --head`, then `ray start --address=...` for a worker node holding the custom
resource `trainer`; token auth on), with the lake on the local S3 server. The S3 endpoint and
credentials reach the job and the workers only through the environment of the Ray nodes."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs
import pytest

from dnr.registry import Registry
from dnr.storage import Lake
from dnr.testing import RayHead
from tests.integration.test_train import add_days, ds

pytestmark = [pytest.mark.e2e, pytest.mark.s3]
REPO = Path(__file__).resolve().parents[2]
#: placement and storage are under test, not learning: a model that saves and loads in no time
SMALL_MODEL = ["data.num_buckets=1024", "model.d_model=16", "model.ff_dim=32"]


def _objects(lake: Lake, uri: str) -> list[str]:
    """Every object under ``uri`` in the bucket, as ``bucket/key``."""
    selector = pafs.FileSelector(lake.fs_path(uri), recursive=True, allow_not_found=True)
    return [i.path for i in lake.filesystem().get_file_info(selector) if i.type == pafs.FileType.File]


def test_daily_job_on_a_head_and_a_trainer_node_with_the_lake_on_s3(s3_server):
    lake = Lake(f"s3://{s3_server.make_bucket()}/lake")
    add_days(lake, 0, 2)  # trains on day 0, holds day 1 out

    # The head has no `trainer` resource, so the Train workers (train.worker_resource) can only
    # land on the worker node, whose 2 CPUs they fill; Ray Data's tasks run on the head's 2 CPUs (more logical CPUs would only start more worker processes on 2 cores).
    with RayHead(num_cpus=2, env=s3_server.env) as head:
        head.add_worker(num_cpus=2, resources={"trainer": 2})
        job = head.submit(["python", "jobs/train_daily.py", "--lake", lake.root,
                           "--config", "jobs/configs/local.yaml", "train.worker_resource=trainer",
                           "train.max_steps=3", "train.epochs=1", "data.batch_size=64", *SMALL_MODEL,
                           # replay and promotion on S3: test_two_days_in_a_row_on_s3 (suite time)
                           "gate.enabled=false"],
                          cwd=str(REPO))
        nodes = {n["node_id"]: n for n in head.nodes()}
        train_workers = head.actors("RayTrainWorker")
        assert head.processes(), "the cluster's processes are not found by its marker"
    assert head.processes() == [], "a process of the cluster outlived stop()"

    log = job.stdout + job.stderr
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "succeeded" in log and "[daily] summary" in job.stdout
    assert s3_server.endpoint not in log  # the endpoint (and credentials) came from the env

    (head_id,) = (i for i, n in nodes.items() if n["is_head_node"])
    (trainer_id,) = (i for i, n in nodes.items() if "trainer" in n["resources_total"])
    assert trainer_id != head_id and "trainer" not in nodes[head_id]["resources_total"]
    assert len(train_workers) == 2  # train.num_workers in local.yaml
    assert {a["node_id"] for a in train_workers} == {trainer_id}, "a Train worker ran off the trainer node"

    (version,) = Registry(lake).versions()
    assert version.status == "candidate"
    # 256 rows / 2 workers / batch 64 = 2 steps: the overrides reached the job
    assert (version.window_start, version.window_end, version.global_step) == (ds(0), ds(0), 2)
    assert version.checkpoint_uri.startswith(lake.uri("checkpoints"))
    stored = _objects(lake, lake.uri("checkpoints"))
    # both workers' parts of the sharded checkpoint reached the bucket, and the index
    assert {lake.fs_path(version.checkpoint_uri) + f"/model/{name}"
            for name in (".metadata", "__0_0.distcp", "__1_0.distcp")} <= set(stored)
    assert any("tfevents" in key for key in _objects(lake, lake.uri("tensorboard", version.run_name)))
