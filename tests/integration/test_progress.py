"""The driver's training progress: rank 0 posts to the board, the driver draws."""

import io

import pytest
import ray

from dnr.daily.progress import TrainProgress
from dnr.training.progress import WorkerProgress, line

pytestmark = pytest.mark.integration


@ray.remote(num_cpus=0)
def _rank0(board, steps: int) -> None:
    progress = WorkerProgress(total_steps=steps, board=board)
    for step in range(1, steps + 1):
        progress.show(step, 100 + step, 0, {"train/loss_z": 0.5 / step, "train/lr": 1e-3}, 250.0)
    ray.get(board.read.remote())  # calls from one caller run in order: every post has landed


def test_the_driver_draws_what_rank_0_posts(ray_cluster):
    out = io.StringIO()
    with TrainProgress(total_steps=4, interval_s=0.05, stream=out, live=False) as progress:
        ray.get(_rank0.remote(progress.board, 4))
    lines = out.getvalue().splitlines()
    assert lines and lines[-1].startswith("[train] step 104 epoch 0 | loss_z=0.1250 | 250 req/s")
    assert lines[-1].endswith("4/4 steps, ETA     0s")
    assert len(lines) == len(set(lines)) <= 4  # one line per new post, none repeated


def test_live_bar_counts_steps_and_shows_the_rate(ray_cluster):
    out = io.StringIO()
    with TrainProgress(total_steps=8, interval_s=0.05, stream=out, live=True) as progress:
        ray.get(_rank0.remote(progress.board, 3))
    drawn = out.getvalue().split("\r")[-1]
    assert "3/8" in drawn and "req/s=250" in drawn and "z=0.167" in drawn


def test_line_without_a_total_has_no_eta():
    text = line({"steps": 5, "global_step": 9, "epoch": 1, "losses": {"train/loss_x": 1.0},
                 "requests_per_s": 1234.5, "elapsed": 2.0}, None)
    assert text == "[train] step 9 epoch 1 | loss_x=1.0000 | 1,234 req/s |     2s"
