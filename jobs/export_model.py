"""Export a registered reranker for serving and check it against the eager model: ``dnr export``
(dnr/cli/export.py) as a script. Same flags and exit statuses; ``--help`` lists them.

    python jobs/export_model.py --lake ./lake --version production
"""

from dnr.cli.export import PARITY_ROWS, SYNTHETIC_ROWS, main, parity_rows, parse_args  # noqa: F401 - the job's API
from dnr.runtime import exit_process

if __name__ == "__main__":
    exit_process(main())  # not sys.exit: see dnr.runtime.exit_process
