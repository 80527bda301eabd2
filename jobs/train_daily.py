"""The daily incremental training job: ``dnr train`` (dnr/cli/train.py) as a script, for
``ray job submit``. Same flags, behaviour and exit statuses; ``--help`` lists them.

    ray job submit --working-dir . -- python jobs/train_daily.py --lake s3://bucket/lake \\
        --config cluster/configs/daily_gpu.yaml
    python jobs/train_daily.py --lake ./lake --dry-run      # the plan, without Ray
"""

from dnr.cli import finish
from dnr.cli.train import EMBEDDED_WORLD, LOCAL_CONFIG, main, parse_args  # noqa: F401 - the job's API

if __name__ == "__main__":
    finish(main())  # Ray shut down if it was imported, then exit_process: see dnr.cli.finish
