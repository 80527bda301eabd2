"""The training progress, the workers' side: rank 0 posts its counters to a
:class:`ProgressBoard` actor at every log step (fire and forget: the step never waits for it) and
writes the same line to its own log. The driver's bar that polls the board is
:class:`dnr.daily.progress.TrainProgress`.
"""

from __future__ import annotations

import sys
import time

import ray


@ray.remote(num_cpus=0)
class ProgressBoard:
    """The latest counters posted by rank 0 (steps this run, global step, losses, requests/s)."""

    def __init__(self):
        self.latest: dict = {}

    def post(self, counters: dict) -> None:
        self.latest = counters

    def read(self) -> dict:
        return self.latest


class WorkerProgress:
    """Rank 0's side: at each log step, one line on the worker's stderr (Ray's worker log; the
    console with ``--verbose``) and the same counters posted to the driver's board."""

    def __init__(self, total_steps: int | None, board=None):
        self.total_steps = total_steps
        self.board = board
        self.start = time.monotonic()

    def show(self, step_in_run: int, global_step: int, epoch: int, scalars: dict[str, float],
             requests_per_s: float) -> None:
        counters = {"steps": step_in_run, "global_step": global_step, "epoch": epoch,
                    "losses": {k: v for k, v in scalars.items() if "loss" in k},
                    "requests_per_s": requests_per_s, "elapsed": time.monotonic() - self.start}
        # not print(): Ray Train patches print into its logger, which shows every line twice
        sys.stderr.write(line(counters, self.total_steps) + "\n")
        if self.board is not None:
            self.board.post.remote(counters)


def line(counters: dict, total_steps: int | None) -> str:
    """One progress line (what a log file gets; a terminal gets the same facts as a bar)."""
    steps, elapsed = counters.get("steps", 0), counters.get("elapsed", 0.0)
    eta = ""
    if total_steps and steps:
        eta = f" | {steps}/{total_steps} steps, ETA {max(total_steps - steps, 0) * elapsed / steps:5.0f}s"
    losses = " ".join(f"{k.split('/')[-1]}={v:.4f}" for k, v in counters.get("losses", {}).items())
    return (f"[train] step {counters.get('global_step', 0)} epoch {counters.get('epoch', 0)} | "
            f"{losses} | {counters.get('requests_per_s', 0.0):,.0f} req/s | {elapsed:5.0f}s{eta}")
