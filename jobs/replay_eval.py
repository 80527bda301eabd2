"""Offline replay evaluation and the promotion gate: ``dnr replay`` (dnr/cli/replay.py) as a
script, for ``ray job submit``. Same flags, behaviour and exit statuses; ``--help`` lists them.

    ray job submit --working-dir . -- python jobs/replay_eval.py --lake s3://bucket/lake \\
        --config cluster/configs/daily_gpu.yaml --promote
"""

from dnr.cli import finish
from dnr.cli.replay import main, parse_args  # noqa: F401 - the job's API

if __name__ == "__main__":
    finish(main())  # Ray shut down if it was imported, then exit_process: see dnr.cli.finish
