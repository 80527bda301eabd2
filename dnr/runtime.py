"""A job process from start to end: the Ray it joins or embeds (:func:`start_ray`: the cluster it
was submitted to, or an embedded local one), the signals that stop it (:func:`accept_stop_signals`),
the refusals it prints (:class:`JobError`, the ``EXIT_*`` statuses every job documents) and how it
exits (:func:`end_job`, :func:`exit_process`, which any process that read a Delta table needs).
All are a job's process lifecycle, hence one module.

An embedded Ray's agents (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) are the raylet's
children and outlive it: a driver that ends without stopping them leaves them to PID 1. So a job
stops its embedded Ray's processes itself on every way out (:func:`end_job`, :func:`end_interrupted`),
and, since a killed driver (SIGKILL, the OOM killer) cannot, it records its session under
:data:`SESSIONS` and the next embedded start stops the sessions whose driver is gone
(:func:`reap_orphaned_sessions`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

#: exit statuses of every job and ``dnr`` command (each one's docstring lists those it uses)
EXIT_OK = 0
"""done (a daily run that found nothing new to train is done too)"""
EXIT_REFUSED = 1
"""refused by the registry (an unknown or rejected version, nothing to roll back) or by a schema
check of the data; also any unexpected error (a traceback)"""
EXIT_USAGE = 2
"""a bad argument or config key/value (argparse's own status for a bad option)"""
EXIT_ALREADY_PRODUCTION = 3
"""a promotion of the version that is production already: nothing changed"""
EXIT_NO_INPUT = 66
"""the lake, its request_logs or the model version named is missing (EX_NOINPUT)"""
EXIT_LEASE_HELD = 75
"""another run holds the lake's lease: try again later (EX_TEMPFAIL)"""
EXIT_INTERRUPTED = 130
"""Ctrl-C (128 + SIGINT, as a shell reports it)"""
EXIT_TERMINATED = 143
"""SIGTERM, e.g. a scheduler stopping the job (128 + SIGTERM)"""

#: where each embedded Ray's driver records its session (one file per driver, per user)
SESSIONS = Path(tempfile.gettempdir()) / f"dnr-embedded-ray-{os.getuid()}"
_embedding = False  # this process started an embedded Ray (its session dir below, once known)
_session: str | None = None


class JobError(Exception):
    """An expected refusal (a bad argument, a missing input): one line on stderr naming the thing,
    exit status ``code``, no traceback (``--verbose`` shows it)."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


class Terminated(KeyboardInterrupt):
    """SIGTERM raised where Ctrl-C is: every path that releases the lease on Ctrl-C (``with``
    blocks, :func:`dnr.daily.placement.fit_interruptibly`) then releases it on a scheduler's stop."""


class JobArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line and :data:`EXIT_USAGE`, like every other refusal of a job."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (--help for usage)\n")


def refuse(job: str, error: JobError, verbose: bool = False) -> int:
    """Print ``error`` as ``[job] message`` (after its traceback with ``verbose``); its status."""
    if verbose:
        traceback.print_exception(error)
    print(f"[{job}] {error}", file=sys.stderr)
    return error.code


def run_stoppable(job: str, run, args, after_stop: str = "") -> int:
    """``run(args)`` for a job that may start Ray and hold the lake's lease: a :class:`JobError` is
    one line and its status (:func:`refuse`); Ctrl-C or SIGTERM says so (then ``after_stop``) and
    ends the process at once, the embedded Ray's processes with it (:func:`end_interrupted`)."""
    try:
        return run(args)
    except JobError as error:
        return refuse(job, error, args.verbose)
    except KeyboardInterrupt as stop:
        print(f"\n[{job}] interrupted ({interrupted_by(stop)}){after_stop}", file=sys.stderr)
        end_interrupted(stop)


def interrupted_by(stop: KeyboardInterrupt) -> str:
    return "SIGTERM" if isinstance(stop, Terminated) else "Ctrl-C"


def end_interrupted(stop: KeyboardInterrupt) -> None:
    """End a job that Ctrl-C or SIGTERM stopped: an embedded Ray's processes stopped, then at once
    (no ``ray.shutdown()``: it would wait on the training thread), status 130 or 143."""
    stop_ray(graceful=False)
    exit_process(EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED)


def end_job(code: int) -> None:
    """The end of a job that may have started Ray: Ray shut down, then :func:`exit_process`."""
    stop_ray()
    exit_process(code)


def check_lake(lake) -> None:
    """Refuse a local ``--lake`` that is a file or lies under one, before anything reads it (Delta
    would report its tables as missing, pyarrow with a traceback)."""
    if lake.is_s3:
        return
    path = Path(lake.root).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        where = "is a file" if existing == path else f"is under the file {existing}"
        raise JobError(f"--lake {lake.root} {where}, not a lake directory", EXIT_NO_INPUT)


def accept_stop_signals() -> list[str]:
    """:func:`accept_ctrl_c`, and SIGTERM raises :class:`Terminated` (released lease, status 143)
    instead of ending the process where it stands, which leaves the lease held until it expires."""
    changed = accept_ctrl_c()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    signal.signal(signal.SIGTERM, _raise_terminated)
    return changed


def _raise_terminated(signum, frame):
    raise Terminated()


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


def embedded_ray() -> bool:
    """Whether :func:`start_ray` will embed a local Ray (known before it starts: ``ray job submit``
    sets ``RAY_ADDRESS``)."""
    return "RAY_ADDRESS" not in os.environ


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

    global _session, _embedding
    if ray.is_initialized():
        return False
    embedded, on_sigterm = embedded_ray(), signal.getsignal(signal.SIGTERM)
    if embedded:
        reap_orphaned_sessions()
        port = _free_port()
        _embedding = True
        # more logical CPUs than cores so that Train workers and scoring actors always leave
        # slots for Ray Data's read and map tasks (a full cluster makes reads hang)
        context = ray.init(address="local", num_cpus=num_cpus or max(4, (os.cpu_count() or 2) * 2),
                           include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
                           runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}},
                           log_to_driver=verbose)
        _session = context.address_info["session_dir"]
        _record_session(_session)
    else:
        ray.init(log_to_driver=verbose)
    if on_sigterm is _raise_terminated:  # ray.init replaces it with a sys.exit(15)
        signal.signal(signal.SIGTERM, on_sigterm)
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


def stop_ray(graceful: bool = True) -> None:
    """Disconnect from Ray (``ray.shutdown()`` unless not ``graceful``); an embedded Ray's processes
    are then stopped, the agents that outlive the raylet included, and its record removed."""
    import ray

    global _session, _embedding
    if graceful and ray.is_initialized():
        ray.shutdown()
    if _embedding:  # the session is unknown while ray.init runs: the driver's children are its processes
        me, session = os.getpid(), _session
        _stop_processes(lambda: (session_processes(session) if session else set()) | _descendants(me))
        _record_path(me).unlink(missing_ok=True)
        _session, _embedding = None, False


def reap_orphaned_sessions() -> list[str]:
    """Stop the processes of the embedded Ray sessions recorded under :data:`SESSIONS` whose driver
    is gone (killed, so it could not stop them); returns their session dirs. A session whose
    driver still runs is never touched, nor is any Ray that no job recorded (a cluster, a test's)."""
    reaped = []
    for record in sorted(SESSIONS.glob("*.json")):
        try:
            entry = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if _start_time(entry["driver_pid"]) == entry["driver_started"]:
            continue  # its driver runs: it stops its own Ray
        _stop_processes(lambda session=entry["session_dir"]: session_processes(session))
        record.unlink(missing_ok=True)
        reaped.append(entry["session_dir"])
    return reaped


def session_processes(session_dir: str) -> set[int]:
    """Live processes of a Ray session: those naming ``session_dir`` on their command line (gcs,
    raylet, dashboard, monitors) or holding a file open under it (the agents and workers retitle
    themselves ``ray::...`` but keep their log files open there). Empty where there is no /proc."""
    named = re.compile(re.escape(session_dir.encode()) + rb"(?![^/\0\s])")
    found = set()
    for pid in _pids():
        try:
            if named.search(Path(f"/proc/{pid}/cmdline").read_bytes()) or any(
                    os.readlink(fd).startswith(session_dir + "/") for fd in _fds(pid)):
                found.add(pid)
        except OSError:  # ended meanwhile, or another user's
            continue
    return found


def _fds(pid: int):
    for fd in os.scandir(f"/proc/{pid}/fd"):
        yield fd.path


def _pids() -> list[int]:
    """Live processes but this one (zombies are dead: they only wait for their parent to reap them)."""
    me, pids = os.getpid(), []
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        if entry.name.isdigit() and int(entry.name) != me and _stat(int(entry.name))[1] not in ("Z", "X", None):
            pids.append(int(entry.name))
    return pids


def _stat(pid: int) -> tuple[int | None, str | None, int | None]:
    """(parent pid, state, start time in clock ticks since boot) from /proc, Nones if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None, None, None
    return int(fields[1]), fields[0], int(fields[19])


def _start_time(pid: int) -> int | None:
    """What tells a process from a later one with the same pid."""
    return _stat(pid)[2]


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for child in _pids():
        children.setdefault(_stat(child)[0], []).append(child)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.add(child)
            todo.append(child)
    return found


def _stop_processes(find: Callable[[], set[int]], grace_s: float = 5.0, kill_s: float = 5.0) -> None:
    """SIGTERM what ``find`` returns, and what it returned before, until all have ended; SIGKILL
    after ``grace_s``. Found again each round: a raylet may start a worker while its siblings stop,
    and the raylet's children are no longer the driver's descendants once the raylet ended."""
    known: dict[int, int | None] = {}  # pid -> start time, so that a reused pid is never signalled
    deadline = time.monotonic() + grace_s
    while True:
        known.update({pid: _start_time(pid) for pid in find() if pid not in known})
        alive = [pid for pid, started in known.items() if _stat(pid)[1] not in ("Z", "X", None)
                 and _start_time(pid) == started]
        late = time.monotonic() > deadline
        if not alive or time.monotonic() > deadline + kill_s:
            return  # ended, or unkillable (another user's, uninterruptible sleep): never hang a job's exit
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL if late else signal.SIGTERM)
            except OSError:
                pass
        time.sleep(0.1)


def _record_path(pid: int) -> Path:
    return SESSIONS / f"{pid}.json"


def _record_session(session_dir: str) -> None:
    """This driver's embedded session, for :func:`reap_orphaned_sessions` of a later job (best
    effort: a job that cannot write it still runs)."""
    me = os.getpid()
    try:
        SESSIONS.mkdir(parents=True, exist_ok=True)
        tmp = SESSIONS / f".{me}.tmp"
        tmp.write_text(json.dumps({"driver_pid": me, "driver_started": _start_time(me), "session_dir": session_dir}))
        tmp.replace(_record_path(me))
    except OSError:
        pass


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
