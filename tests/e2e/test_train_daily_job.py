"""The daily job as a user runs it: `python jobs/train_daily.py` with no cluster, twice.

The first run starts an embedded Ray, generates the small synthetic world into an empty lake,
trains and registers a version; the second run finds nothing new to train and says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dnr.registry import Registry
from dnr.storage import Lake
from dnr.training import checkpoint as ckpt

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "AWS_"))}
    return subprocess.run([sys.executable, str(REPO / "jobs" / "train_daily.py"), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=900)


def test_embedded_daily_job_trains_then_is_idempotent(tmp_path):
    overrides = ["train.max_steps=6", "data.batch_size=64", "train.log_every_steps=2"]
    first = _run(["--num-cpus", "4", "--json", "result.json", *overrides], cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout
    assert "generating a small synthetic world" in out and "train.max_steps" in out  # config printed
    assert "[daily] summary" in out and "dnr-v0001" in out
    assert "[train] step" in first.stderr + out  # progress lines reach the console

    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "trained" and result["global_step"] == 6
    lake = Lake(str(tmp_path / "lake"))  # the embedded default lake is ./lake
    version = Registry(lake).get("dnr-v0001")
    assert version.status == "candidate" and version.parent_version is None
    assert version.rows_read == result["rows_read"] > 0
    assert ckpt.load(version.checkpoint_uri).progress.global_step == 6

    second = _run(["--num-cpus", "4", *overrides], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "nothing to train" in second.stdout and len(Registry(lake).versions()) == 1
