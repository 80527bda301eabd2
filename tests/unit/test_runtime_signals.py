"""Ctrl-C reaches a job whatever SIGINT state it inherited: blocked (Ray blocks SIGINT in the
processes it spawns) or ignored (a parent inside C's ``system()``, or a shell's background list)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

# the try starts before the line the test waits for: the signal may land while it is printed
SLEEPER = """
import sys, time
try:
    if sys.argv[1] == "accept":
        from dnr.runtime import accept_ctrl_c
        print(",".join(accept_ctrl_c()) or "nothing", flush=True)
    else:
        print("left as is", flush=True)
    time.sleep(60)
except KeyboardInterrupt:
    sys.exit(130)
"""

INHERITED = {
    "blocked": lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}),
    "ignored": lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
}


def _interrupted(inherited: str, mode: str, wait_s: float = 10.0) -> tuple[str, int | None]:
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER, mode], stdout=subprocess.PIPE, text=True,
                            preexec_fn=INHERITED[inherited])
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


@pytest.mark.parametrize(("inherited", "changed"), [("blocked", "unblocked"), ("ignored", "no longer ignored")])
def test_a_job_takes_ctrl_c_after_accept_ctrl_c(inherited, changed):
    assert _interrupted(inherited, "accept") == (changed, 130)


@pytest.mark.parametrize("inherited", INHERITED)
def test_without_it_the_signal_does_nothing(inherited):
    # the failure accept_ctrl_c exists for: the process sleeps through Ctrl-C
    assert _interrupted(inherited, "leave", wait_s=2.0) == ("left as is", None)


TERM_SLEEPER = """
import sys, time
from dnr.runtime import EXIT_TERMINATED, Terminated, accept_stop_signals
accept_stop_signals()
try:  # "ready" inside the try: the signal may land before the sleep starts
    print("ready", flush=True)
    time.sleep(60)
except Terminated:  # a KeyboardInterrupt: every path that releases the lease on Ctrl-C takes it
    sys.exit(EXIT_TERMINATED)
"""


def test_sigterm_raises_where_ctrl_c_does_even_when_inherited_blocked():
    proc = subprocess.Popen([sys.executable, "-c", TERM_SLEEPER], stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}))
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 143
    finally:
        proc.kill()
        proc.wait()
