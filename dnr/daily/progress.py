"""The training progress bar, drawn by the driver while ``trainer.fit()`` runs.

A thread of the driver polls the :class:`~dnr.training.progress.ProgressBoard` that rank 0 posts
to (:class:`~dnr.training.progress.WorkerProgress`) and draws one bar: steps done of the run's
total, requests/s, ETA and the latest losses. The driver owns the console, so the workers' own
output can stay in Ray's log files (``--verbose`` brings it back); a terminal gets a live bar, a
log file (no TTY) gets one line per update.
"""

from __future__ import annotations

import sys
import threading

import ray

from dnr.training.progress import ProgressBoard, line


class TrainProgress:
    """The driver's side: ``with TrainProgress(total) as progress:`` hands ``progress.board`` to
    the workers (``WorkerSpec.progress_board``) and draws until the block ends."""

    def __init__(self, total_steps: int | None, interval_s: float = 1.0, stream=None,
                 live: bool | None = None):
        self.total_steps = total_steps
        self.interval_s = interval_s
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.board = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar = None
        self._shown: dict = {}

    def __enter__(self) -> "TrainProgress":
        self.board = ProgressBoard.remote()
        if self.live:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total_steps, desc="train", unit="step", file=self.stream,
                             dynamic_ncols=True)
        self._thread = threading.Thread(target=self._poll, name="train-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._show(self._read(timeout=5))
        if self._bar is not None:
            self._bar.close()
        if self.board is not None:
            ray.kill(self.board)

    def _read(self, timeout: float) -> dict:
        try:
            return ray.get(self.board.read.remote(), timeout=timeout)
        except Exception:  # noqa: BLE001 - a progress bar never fails the run
            return {}

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._show(self._read(timeout=self.interval_s * 5))

    def _show(self, counters: dict) -> None:
        if not counters or counters == self._shown:
            return
        self._shown = counters
        if self._bar is None:
            self.stream.write(line(counters, self.total_steps) + "\n")
            self.stream.flush()
            return
        self._bar.n = min(counters.get("steps", 0), self.total_steps or counters.get("steps", 0))
        losses = {k.split("/")[-1].removeprefix("loss_"): f"{v:.3f}"
                  for k, v in counters.get("losses", {}).items()}
        self._bar.set_postfix({"req/s": f"{counters.get('requests_per_s', 0.0):,.0f}",
                               "epoch": counters.get("epoch", 0), **losses}, refresh=True)
