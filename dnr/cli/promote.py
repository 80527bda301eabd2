"""Move a model line's production version by hand: promote a version (``dnr promote``,
``python jobs/promote.py``), or roll back (``dnr rollback``, ``promote --rollback``).

    dnr promote --lake ./lake --version dnr-v0004 --reason "replay report r-17 passed"
    dnr promote --lake ./lake --version dnr-v0004 --reason "..." --report-id r-17
    dnr rollback --lake s3://bucket/lake --model dnr --reason "CTR dropped 3%"
    python jobs/promote.py --lake s3://bucket/lake --rollback --model dnr --reason "CTR dropped 3%"

--version makes a candidate (or a retired version) production and retires the current one;
--rollback restores the most recently retired version and marks the current one rejected
(run it again to go further back). Either way in one registry commit, so the model line never
has zero or two production versions. Prints production before and after.

Exit status: 0 the change is committed; 1 refused (unknown version, a rejected one, nothing to
roll back, the registry unreachable); 2 bad arguments; 3 the version is already production,
nothing changed and --reason is not recorded (a re-run, or the loser of two identical
promotions run at once: the winner's reason is the one in the registry).
"""

from __future__ import annotations

import argparse
import sys

from dnr.registry import (
    AlreadyProductionError,
    Registry,
    RegistryCommitError,
    RegistryError,
)
from dnr.registry.cli import listing
from dnr.runtime import (
    EXIT_ALREADY_PRODUCTION,
    EXIT_REFUSED,
    EXIT_USAGE,
    JobArgumentParser,
)
from dnr.storage import Lake

#: exit status of a promotion of the version that is production already (see the docstring)
ALREADY_PRODUCTION = EXIT_ALREADY_PRODUCTION


def parse_args(argv=None, prog: str | None = None, rollback: bool = False) -> argparse.Namespace:
    """The promotion's flags; with ``rollback`` those of ``dnr rollback`` (no --version)."""
    p = JobArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", default="./lake", help="lake root: local directory or s3://bucket/prefix")
    if not rollback:
        what = p.add_mutually_exclusive_group(required=True)
        what.add_argument("--version", help="the version to promote, e.g. dnr-v0004")
        what.add_argument("--rollback", action="store_true", help="restore the previous production version")
    p.add_argument("--model", default="dnr", help="model line to roll back (default: dnr)")
    p.add_argument("--reason", required=True, help="why: recorded in the registry's status_reason")
    if not rollback:
        p.add_argument("--report-id", default=None, help="replay report behind a promotion, if any")
    args = p.parse_args(argv)
    if rollback:
        args.version, args.rollback, args.report_id = None, True, None
    return args


def rollback(argv=None, prog: str | None = None) -> int:
    """``dnr rollback``: ``promote --rollback``."""
    return _promote(parse_args(argv, prog, rollback=True))


def main(argv=None, prog: str | None = None) -> int:
    return _promote(parse_args(argv, prog))


def _promote(args: argparse.Namespace) -> int:
    try:
        registry = Registry(Lake(args.lake))
    except ValueError as error:  # a malformed --lake
        print(f"[promote] {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        model = registry.get(args.version).model_name if args.version else args.model
        before = registry.production(model)
        print(f"[promote] {model} production before: {before.version if before else '(none)'}")
        if args.rollback:
            restored, demoted = registry.rollback(model, args.reason)
            print(f"[promote] rolled back: {demoted.version} -> rejected, {restored.version} -> production")
        else:
            promoted = registry.promote(args.version, args.reason, report_id=args.report_id)
            print(f"[promote] {promoted.version} -> production"
                  + (f", {before.version} -> retired" if before else ""))
    except AlreadyProductionError as exc:
        print(f"[promote] {exc.args[0]}", file=sys.stderr)
        return ALREADY_PRODUCTION
    except (KeyError, RegistryError) as exc:
        print(f"[promote] refused: {exc.args[0]}", file=sys.stderr)
        return EXIT_REFUSED
    except RegistryCommitError as exc:
        print(f"[promote] failed: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    after = registry.production(model)
    print(f"[promote] {model} production after: {after.version if after else '(none)'}\n")
    print(listing(registry, model))
    return 0
