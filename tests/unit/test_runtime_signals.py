"""Ctrl-C reaches a job even when it was started with SIGINT blocked, as Ray's own processes
start their children (``ray._private.services`` blocks SIGINT in a ``preexec_fn``)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

SLEEPER = """
import sys, time
if sys.argv[1] == "accept":
    from dnr.runtime import accept_ctrl_c
    print("was blocked" if accept_ctrl_c() else "was not blocked", flush=True)
else:
    print("left as is", flush=True)
try:
    time.sleep(60)
except KeyboardInterrupt:
    sys.exit(130)
"""


def _interrupted(mode: str, wait_s: float = 10.0) -> tuple[str, int | None]:
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER, mode], stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}))
    try:
        said = proc.stdout.readline().strip()
        proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + wait_s
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return said, proc.poll()
    finally:
        proc.kill()
        proc.wait()


def test_a_job_started_with_sigint_blocked_takes_ctrl_c_after_accept_ctrl_c():
    assert _interrupted("accept") == ("was blocked", 130)


def test_without_it_the_signal_stays_pending():
    # the failure accept_ctrl_c exists for: the process sleeps through Ctrl-C
    assert _interrupted("leave", wait_s=2.0) == ("left as is", None)
