"""``dnr``: one command for every job and for the config.

    dnr train --lake ./lake                         # the daily run (embedded Ray, jobs/configs/local.yaml)
    dnr train --lake ./lake --dry-run               # its plan only: parent, window, table version, rows
    dnr config show --config cluster/configs/daily_gpu.yaml train.epochs=2
    dnr promote --lake ./lake --version dnr-v0004 --reason "replay report r-17 passed"

Each command is a module of this package holding the job's parser and its ``main(argv, prog)``;
the ``jobs/*.py`` scripts are shims over the same functions (for ``ray job submit``), so a script
and its command take the same flags and end with the same status (:data:`EXIT_STATUSES`). Every
command checks its arguments and config before Ray starts. Importing this package imports no
command: ``dnr --help``, ``dnr config validate`` and a refused config typo need neither torch nor Ray.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from dnr import __version__
from dnr.runtime import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    JobArgumentParser,
    Terminated,
    end_job,
    exit_process,
    interrupted_by,
)

#: name -> (module, function called with ``(argv, prog=...)``, one line of help)
COMMANDS = {
    "train": ("dnr.cli.train", "main", "train the next version for a day: the daily job (--dry-run: its plan)"),
    "replay": ("dnr.cli.replay", "main", "replay-evaluate a candidate on a held-out day; the promotion gate"),
    "promote": ("dnr.cli.promote", "main", "make a version production by hand"),
    "rollback": ("dnr.cli.promote", "rollback", "restore the previous production version (promote --rollback)"),
    "export": ("dnr.cli.export", "main", "export a version for serving, checked against the eager model"),
    "registry": ("dnr.cli.registry", "main", "read the model registry: list, show, production"),
    "generate": ("dnr.cli.generate", "main", "write synthetic request logs into a lake"),
    "prepare": ("dnr.cli.prepare", "main", "build request_logs from public ratings or a benchmark split"),
    "config": ("dnr.cli.config", "main", "config show: every key, its value and help; config validate"),
}

EXIT_STATUSES = """\
exit statuses (every command and its jobs/*.py script; dnr.runtime.EXIT_*):
  0    done (train: trained, or nothing new to train)
  1    refused by the registry (unknown or rejected version, nothing to roll back) or a schema check
  2    bad argument, config key or value (named on stderr)
  3    promote: the version is already production, nothing changed
  66   no input: the lake, its request_logs or the version named is missing
  75   another run holds the lake's lease: retry later
  130  interrupted (Ctrl-C); 143 terminated (SIGTERM): the lease is released, a re-run resumes"""


def _parser() -> argparse.ArgumentParser:
    commands = "\n".join(f"  {name:<10} {help_}" for name, (_, _, help_) in COMMANDS.items())
    p = JobArgumentParser(
        prog="dnr", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[0] + "\n\ncommands:\n" + commands,
        epilog="dnr <command> --help lists a command's flags; dnr config show lists every config "
               "key with its help.\n\n" + EXIT_STATUSES)
    p.add_argument("--version", action="version", version=f"dnr {__version__}")
    p.add_argument("command", choices=list(COMMANDS), metavar="command", help="one of the commands above")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the command's flags")
    return p


def run(argv: Sequence[str]) -> int:
    """Run ``dnr <argv>`` in this process; its exit status (a ``SystemExit`` becomes one)."""
    argv = list(argv)
    if argv and argv[0] in COMMANDS:
        return _call(argv[0], argv[1:])
    parser = _parser()
    if not argv:
        parser.print_help(sys.stderr)
        return 2
    try:
        parser.parse_args(argv)  # --help, --version, or an unknown command: exits
    except SystemExit as stop:
        return _status(stop)
    parser.print_usage(sys.stderr)  # pragma: no cover - every valid command is dispatched above
    return 2


def _call(name: str, argv: list[str]) -> int:
    module, function, _ = COMMANDS[name]
    entry = getattr(importlib.import_module(module), function)
    try:
        return entry(argv, prog=f"dnr {name}")
    except SystemExit as stop:  # argparse's --help and errors, generate's refusals
        return _status(stop)
    except KeyboardInterrupt as stop:  # the commands that do not handle it themselves
        print(f"\n[dnr {name}] interrupted ({interrupted_by(stop)})", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED


def _status(stop: SystemExit) -> int:
    """What the interpreter would exit with: None 0, an int itself, anything else printed and 1."""
    if stop.code is None or isinstance(stop.code, int):
        return stop.code or 0
    print(stop.code, file=sys.stderr)
    return 1


def finish(code: int) -> None:
    """End the process with ``code`` as the jobs do: Ray shut down (if it was imported), then at
    once, skipping the interpreter's teardown (:func:`dnr.runtime.exit_process`)."""
    if "ray" in sys.modules:
        end_job(code)
    exit_process(code)


def main(argv: list[str] | None = None) -> int:
    """The ``dnr`` console script. With ``argv`` given (tests, other code) it returns the exit
    status; with None it reads ``sys.argv`` and ends the process with that status (:func:`finish`)."""
    code = run(sys.argv[1:] if argv is None else argv)
    if argv is None:
        finish(code)
    return code
