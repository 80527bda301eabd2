"""A job process from start to end: the Ray it joins or embeds (:func:`start_ray`: the cluster it
was submitted to, or an embedded local one), whether Ctrl-C reaches it (:func:`accept_ctrl_c`),
and how it exits (:func:`exit_process`, which any process that read a Delta table needs). All are
a job's process lifecycle, hence one module."""

from __future__ import annotations

import os
import signal


def accept_ctrl_c() -> list[str]:
    """Make SIGINT raise ``KeyboardInterrupt`` in this process, whatever it inherited; call it
    before any other thread starts (threads inherit the mask). Returns what it changed.

    Two inherited states would make Ctrl-C (and a scheduler's SIGINT) do nothing while a run
    holds the lake's lease, both seen here:

    * SIGINT *blocked*: Ray blocks it in the processes it spawns (``ray._private.services``),
      and the mask survives fork and exec.
    * SIGINT *ignored*: a process started while its parent is inside C's ``system()``, which
      ignores SIGINT and SIGQUIT while it waits (a job started from the test session had both
      ignored), or from a shell's background list. A daily run releases its lease and resumes
      from its checkpoints when interrupted, so it takes Ctrl-C in every case.
    """
    changed = []
    if signal.SIGINT in signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}):
        changed.append("unblocked")
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        changed.append("no longer ignored")
    return changed


def start_ray(num_cpus: int | None = None, verbose: bool = False) -> bool:
    """Join the cluster when there is one (``ray job submit`` sets ``RAY_ADDRESS``), else start an
    embedded local Ray. Returns True for an embedded Ray (the jobs then use laptop defaults).

    The embedded Ray is started with ``address="local"``: a plain ``ray.init()`` would silently
    join any Ray already running on the machine. It runs the dashboard, whose State API Ray
    Train's placement-group cleaner polls; every process of the job is told that dashboard's
    address, so with several Rays on one machine the cleaner still queries its own.

    The console: the driver's own lines, Ray Data's progress bars and the training bar
    (:mod:`dnr.training.progress`). Worker output and Ray Data's INFO lines stay in Ray's log
    files (``/tmp/ray/session_latest/logs``); ``verbose`` forwards them to the console as well.
    """
    import ray
    from ray.data import DataContext

    from dnr.data import idle

    if ray.is_initialized():
        return False
    embedded = "RAY_ADDRESS" not in os.environ
    if embedded:
        port = _free_port()
        # more logical CPUs than cores so that Train workers and scoring actors always leave
        # slots for Ray Data's read and map tasks (a full cluster makes reads hang)
        ray.init(address="local", num_cpus=num_cpus or max(4, (os.cpu_count() or 2) * 2),
                 include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
                 runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}},
                 log_to_driver=verbose)
    else:
        ray.init(log_to_driver=verbose)
    DataContext.get_current().enable_progress_bars = True
    idle.install()  # Ray Data's scheduling loop pauses instead of spinning (dnr.data.idle)
    quiet_ray_data_console(not verbose)
    return embedded


def quiet_ray_data_console(quiet: bool = True) -> None:
    """Ray Data's INFO lines (execution plans, "finished in") off the console, kept in its log
    file (``ray-data.log``); warnings and errors still reach the console."""
    import logging

    import ray.data  # noqa: F401 - configures the "ray.data" logger

    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING if quiet else logging.INFO)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
