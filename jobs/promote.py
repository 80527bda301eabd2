"""Move a model line's production version by hand: ``dnr promote`` and, with --rollback,
``dnr rollback`` (dnr/cli/promote.py) as a script. Same flags and exit statuses (0 committed,
1 refused, 2 bad arguments, 3 already production); ``--help`` lists them.

    python jobs/promote.py --lake ./lake --version dnr-v0004 --reason "replay report r-17 passed"
    python jobs/promote.py --lake s3://bucket/lake --rollback --model dnr --reason "CTR dropped 3%"
"""

from dnr.cli.promote import ALREADY_PRODUCTION, main, parse_args  # noqa: F401 - the job's API
from dnr.runtime import exit_process

if __name__ == "__main__":
    exit_process(main())  # not sys.exit: see dnr.runtime.exit_process
