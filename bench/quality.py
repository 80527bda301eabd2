"""Ranking quality of DNR against its baselines: one command per dataset, in-process PyTorch.

    python bench/quality.py --dataset synthetic --seeds 0 1 2
    python bench/quality.py --dataset ml-latest-small \
        --ratings ../shared/data/ml-latest-small/ratings.csv --seeds 0 1 2 3 4
    python bench/quality.py --lake s3://bucket/lake --eval-ds 2024-01-05 --seeds 0 1 2

No Ray: this measures the method, not the system. Each dataset is split by time: rerankers
train on the earlier days and are evaluated on later held-out day(s). ``--split valid`` instead
holds out the last *training* day(s) and never touches the test days: tune with it. ``--lake``
runs the same rows on any ``request_logs`` table (local path or s3://): evaluated on the day
``--eval-ds``, trained on ``--train-days`` (default: every ds before it); only those days'
files are read.

Every trained row gets the same budget (steps, batch size, learning rate, data order) from the
dataset's preset; a seed fixes the model initialisation, the training order and the noise draws.
Rows: the retriever order (no training), PRM with each naive score mode, DNR-G, DNR-B, three
ablations of DNR-B, the DeGRe rows (evaluator-only greedy, the generator distilled from
beam-mined dense targets, the generator without dense supervision) and on synthetic data the
oracle order from ``true_click_prob`` where the evaluation day has it. ``--rows`` picks a subset
and ``--tag`` names its files.

Writes ``bench/results/quality_<dataset>.md`` (``quality_lake_<eval-ds>.md`` for a lake: mean ±
std over seeds, each row's N@6 relative to the retriever order, paired bootstraps of the N@6
differences over the evaluation requests, and the cost of each trained row: training time per
step, inference time per request, DeGRe's mining time per request) and the ``.json`` next to it
(per-seed numbers and the intervals).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/quality.py` from anywhere

# The code lives in bench/quality_bench (one module per concern); its names stay importable from here.
from bench.quality_bench import (  # noqa: E402 - after sys.path
    FIXED_SCORERS, METRICS, PRESETS, ROW_BY_NAME, LakeError, Results, SyntheticData, applicable_rows, bootstrap,
    daily_recipe, evaluate, holdout, lake_days, lake_split, markdown, parse_args, run_benchmark, synthetic_table,
    time_split, to_json)
from bench.quality_bench.cli import main  # noqa: E402 - after sys.path

__all__ = ["FIXED_SCORERS", "METRICS", "PRESETS", "ROW_BY_NAME", "LakeError", "Results", "SyntheticData",
           "applicable_rows", "bootstrap", "daily_recipe", "evaluate", "holdout", "lake_days", "lake_split", "main",
           "markdown", "parse_args", "run_benchmark", "synthetic_table", "time_split", "to_json"]

if __name__ == "__main__":
    from dnr.runtime import exit_process

    # A process that read a Delta table can abort at interpreter exit (delta-rs #2184): flush, _exit.
    exit_process(main())
