"""A pause for Ray Data's scheduling loop when it has nothing to wait on.

Ray Data 2.60's streaming executor blocks in ``ray.wait`` (up to 0.1 s) only while some task
of the dataset is running. When none is, because the read-ahead budget is full and the
consumer is slower than the reads (training always is), each step of its loop returns at once
and the loop spins: the ``SplitCoordinator`` that feeds the Train workers used 7 min of CPU in
the first 9 min of a million-request run on 2 cores (py-spy: resource bookkeeping and metrics
gauges), more than either Train worker.

:class:`IdleBackoff` is an execution callback (``DataContext.custom_execution_callback_classes``,
carried with the dataset to whichever process executes it): after a step that returned within
``QUICK_S`` of the previous one, it sleeps ``PAUSE_S``. A step that waited on a task is never
delayed, and a consumer freeing budget waits at most ``PAUSE_S`` for the next dispatch.
"""

from __future__ import annotations

import time

from ray.data._internal.execution.execution_callback import ExecutionCallback

#: a scheduling step shorter than this waited on nothing (``ray.wait`` blocks up to 0.1 s)
QUICK_S = 0.02
#: the pause after such a step (bench/idle_loop.py: the coordinator's CPU 0.63 -> 0.14 per second)
PAUSE_S = 0.02


class IdleBackoff(ExecutionCallback):
    """Sleeps ``PAUSE_S`` after a scheduling step that found no running task to wait on."""

    def __init__(self):
        self._last: float | None = None

    def on_execution_step(self, executor) -> None:
        now = time.perf_counter()
        if self._last is not None and now - self._last < QUICK_S:
            time.sleep(PAUSE_S)
            now = time.perf_counter()
        self._last = now


def install(context=None) -> None:
    """Add :class:`IdleBackoff` to a ``DataContext`` (default: the current one), once."""
    from ray.data import DataContext

    context = context or DataContext.get_current()
    if IdleBackoff not in context.custom_execution_callback_classes:
        context.custom_execution_callback_classes = [*context.custom_execution_callback_classes,
                                                     IdleBackoff]
