"""The quality bench behind ``python bench/quality.py`` (its docstring is the user's guide), one
module per concern, each importing only those above it:

* ``rows``: the rows of the table (``Row``, ``ROWS``, ``BASELINE``) and the metrics at ``K``;
* ``sources``: the budgets (``PRESETS``, ``daily_recipe``), the synthetic, MovieLens and lake tables,
  their time splits and batches;
* ``run``: training and scoring each row for each seed (``train_reranker``, ``evaluate``,
  ``run_benchmark`` into ``Results``);
* ``report``: the paired bootstrap intervals, the markdown tables and the .json;
* ``cli``: the arguments and ``main``.
"""

from bench.quality_bench.cli import applicable_rows, configure, load_split, main, parse_args
from bench.quality_bench.report import bootstrap, markdown, paired_intervals, to_json
from bench.quality_bench.rows import BASELINE, METRICS, ROW_BY_NAME, ROWS, K, Row
from bench.quality_bench.run import FIXED_SCORERS, Results, Trained, evaluate, run_benchmark, train_reranker
from bench.quality_bench.sources import (DATASETS, PRESETS, BenchConfig, LakeError, PublicData, Split, SyntheticData,
                                         daily_recipe, holdout, lake_days, lake_split, public_table, synthetic_table,
                                         time_split)

__all__ = [
    "applicable_rows", "configure", "load_split", "main", "parse_args",
    "bootstrap", "markdown", "paired_intervals", "to_json",
    "BASELINE", "METRICS", "ROW_BY_NAME", "ROWS", "K", "Row",
    "FIXED_SCORERS", "Results", "Trained", "evaluate", "run_benchmark", "train_reranker",
    "DATASETS", "PRESETS", "BenchConfig", "LakeError", "PublicData", "Split", "SyntheticData", "daily_recipe",
    "holdout", "lake_days", "lake_split", "public_table", "synthetic_table", "time_split",
]
