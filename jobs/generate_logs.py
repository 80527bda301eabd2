"""Write synthetic request logs into a lake, a day at a time: ``dnr generate``
(dnr/cli/generate.py) as a script, for ``ray job submit``. Same flags and exit statuses (1 a
refused day or schema, 2 bad arguments); ``--help`` lists them.

    python jobs/generate_logs.py --lake /tmp/lake --days 3 --requests-per-day 20000
    ray job submit -- python jobs/generate_logs.py --lake s3://bucket/lake --start 2024-01-01
"""

import sys

from dnr.cli.generate import main, parse_args  # noqa: F401 - the job's API

if __name__ == "__main__":
    sys.exit(main())
