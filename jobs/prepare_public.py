"""Build request_logs from a public ratings file or an implicit-feedback benchmark split:
``dnr prepare`` (dnr/cli/prepare.py) as a script. Same flags and exit statuses; ``--help``
lists them.

    python jobs/prepare_public.py --ratings ml-latest-small/ratings.csv --lake ./lake
    python jobs/prepare_public.py --lake ./lake --format lines --train train.txt --test test.txt
"""

from dnr.cli.prepare import main, parse_args  # noqa: F401 - the job's API
from dnr.runtime import exit_process

if __name__ == "__main__":
    exit_process(main())  # not sys.exit: see dnr.runtime.exit_process
