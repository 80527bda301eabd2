"""How a job finds its Ray: the cluster it was submitted to, or an embedded local one."""

from __future__ import annotations

import os


def start_ray(num_cpus: int | None = None) -> bool:
    """Join the cluster when there is one (``ray job submit`` sets ``RAY_ADDRESS``), else start an
    embedded local Ray. Returns True for an embedded Ray (the jobs then use laptop defaults).

    The embedded Ray is started with ``address="local"``: a plain ``ray.init()`` would silently
    join any Ray already running on the machine.
    """
    import ray
    from ray.data import DataContext

    if ray.is_initialized():
        return False
    embedded = "RAY_ADDRESS" not in os.environ
    if embedded:
        # more logical CPUs than cores so that Train workers and scoring actors always leave
        # slots for Ray Data's read and map tasks (a full cluster makes reads hang)
        ray.init(address="local", num_cpus=num_cpus or max(4, (os.cpu_count() or 2) * 2),
                 include_dashboard=False, log_to_driver=True)
    else:
        ray.init()
    DataContext.get_current().enable_progress_bars = False
    return embedded


def exit_process(code: int) -> None:
    """Flush and end the process at once, skipping interpreter teardown.

    With deltalake 1.6.6 and pyarrow 26, a process that read a Delta table into Arrow and then
    exits normally aborts at teardown ("terminate called without an active exception", SIGABRT)
    in about half the runs (measured: 7 of 15 runs of a three-line script), which a scheduler
    would report as a failed job. Jobs without a Ray to shut down end through this instead.
    """
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
