"""The command line of ``bench/quality.py``: its arguments, the preset and split they pick, what
is printed before training, and ``main`` (run, report, write the .md and .json)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow.compute as pc
import torch

from bench.quality_bench.report import bootstrap, markdown, to_json
from bench.quality_bench.rows import K, ROW_BY_NAME, ROWS, Row
from bench.quality_bench.run import run_benchmark
from bench.quality_bench.sources import (C, DATASETS, PRESETS, BenchConfig, LakeError, PublicData, Split,
                                         SyntheticData, daily_recipe, keep_valid, lake_split, public_table,
                                         synthetic_table, time_split, trained_requests)
from dnr.config import SCORE_MODES
from dnr.data.arrow_lists import flat_values, list_layout
from dnr.data.validate import SchemaError

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
DESCRIPTION = "Ranking quality of DNR against its baselines: one command per dataset, in-process PyTorch."
"""``--help``'s description: the first paragraph of bench/quality.py's docstring."""


def describe(split: Split, cfg: BenchConfig, rows: Sequence[Row], seeds: Sequence[int]) -> list[str]:
    """The derived quantities printed before training."""
    labels = pc.list_flatten(split.train[C.labels]).to_numpy()
    candidates = pc.list_value_length(split.train[C.candidate_item_ids]).to_numpy()
    eval_labels = split.eval[C.labels].combine_chunks()
    _, owner, _ = list_layout(eval_labels)
    positives = np.bincount(owner, weights=flat_values(eval_labels, 0), minlength=split.eval.num_rows)
    ranked = int((positives > 0).sum())
    trained = len({r.training for r in rows if r.scorer in ("model", "evaluator")})
    return [
        f"train days {split.train_days[0]}..{split.train_days[-1]} ({len(split.train_days)}), "
        f"{split.eval_name} days {split.eval_days[0]}..{split.eval_days[-1]} ({len(split.eval_days)})",
        f"requests: train {split.train.num_rows:,}, {split.eval_name} {split.eval.num_rows:,} "
        f"({ranked:,} with a positive: the requests N@{K} averages over)",
        f"candidates/request: mean {candidates.mean():.1f}, max {candidates.max()}; "
        f"labelled positives rate (train) {labels.mean():.4f} = {labels.sum() / split.train.num_rows:.2f}/request",
        f"budget per trained row: {budget_text(cfg, trained_requests(split, cfg))}",
        f"model: PRM d_model {cfg.model.d_model}, {cfg.model.n_layers} layer(s), {cfg.model.n_heads} heads, "
        f"ff {cfg.model.ff_dim}, dropout {cfg.model.dropout}, {cfg.data.num_buckets} id buckets",
        f"DNR: lambda_m {cfg.dnr.lambda_m}, lambda_x {cfg.dnr.lambda_x}, lambda_c {cfg.dnr.lambda_c}, "
        f"L_x {cfg.dnr.lx_estimator}",
        f"DeGRe: K {cfg.degre.list_len}, beam {cfg.degre.beam_width}, temperature {cfg.degre.temperature}, "
        f"beam_weight {cfg.degre.beam_weight}, evaluator d {cfg.degre.evaluator_d_model} x "
        f"{cfg.degre.evaluator_layers} layer(s), lr {cfg.degre.evaluator_lr:g}",
        f"runs: {trained} trained rows x {len(seeds)} seeds = {trained * len(seeds)} trainings, "
        f"at most {trained * len(seeds) * cfg.total_steps(trained_requests(split, cfg)):,} steps",
    ]


def budget_text(cfg: BenchConfig, train_requests: int) -> str:
    """The training budget of every trained row, in words."""
    per_epoch = cfg.steps_per_epoch(train_requests)
    if cfg.recipe == "daily":
        v = cfg.validation
        return (f"the daily job's recipe: at most {cfg.max_epochs} epochs of {per_epoch} steps of batch "
                f"{cfg.data.batch_size}, warm-up {cfg.optim.warmup_steps} steps then {cfg.optim.lr_decay} decay, "
                f"hold-out {v.fraction:.0%} scored every {v.every_steps} steps and each epoch's end, best "
                f"weights kept, patience {v.patience}; generator switch after {cfg.dnr.lambda_e_epochs:g} "
                f"epoch(s) (step {cfg.switch_step(train_requests)})")
    return (f"{cfg.steps} steps of {cfg.data.batch_size} requests = {cfg.epochs(train_requests):.2f} epochs, "
            f"constant lr, the last weights; generator switch at step {cfg.lambda_e}")


def table_header(dataset: str, split: Split, cfg: BenchConfig, seeds: Sequence[int], extra: str) -> str:
    return (
        f"### {dataset}: {split.eval_name} days {split.eval_days[0]}..{split.eval_days[-1]}, "
        f"trained on {split.train_days[0]}..{split.train_days[-1]}\n\n"
        f"Per-request averages at K={K} over {len(seeds)} seeds ({', '.join(map(str, seeds))}): mean ± sample std. "
        f"PRM d_model={cfg.model.d_model}, {cfg.model.n_layers} layer(s), {cfg.model.n_heads} heads, "
        f"ff {cfg.model.ff_dim}, dropout {cfg.model.dropout}, {cfg.data.num_buckets} id buckets; every trained "
        f"row: {budget_text(cfg, trained_requests(split, cfg))}, DNR rows on score mode {cfg.dnr_mode}, "
        f"AdamW lr {cfg.optim.lr:g} (dense), item table {cfg.optim.embedding_optimizer} lr {cfg.optim.embedding_lr:g}, "
        f"same data order per seed; DNR: generator lr {cfg.optim.generator_lr:g}, "
        f"lambda_m={cfg.dnr.lambda_m}, lambda_x={cfg.dnr.lambda_x}, lambda_c={cfg.dnr.lambda_c}, "
        f"noise scale {cfg.dnr.noise_scale}. DeGRe: K={cfg.degre.list_len}, beam {cfg.degre.beam_width}, "
        f"temperature {cfg.degre.temperature}, beam_weight {cfg.degre.beam_weight}, evaluator "
        f"d_model={cfg.degre.evaluator_d_model}, lr {cfg.degre.evaluator_lr:g}. {extra}"
    )


def ds_value(value: str) -> str:
    """argparse type of a ds: a YYYY-MM-DD date, kept as the partition string."""
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a YYYY-MM-DD ds") from None
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=DESCRIPTION)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", choices=DATASETS)
    source.add_argument("--lake", help="lake root (local path or s3://...) whose request_logs to use")
    p.add_argument("--ratings", help="ratings.csv (--dataset ml-latest-small only)")
    p.add_argument("--eval-ds", type=ds_value, help="--lake: the day evaluated (test split)")
    p.add_argument("--train-days", type=ds_value, nargs="+", metavar="DS",
                   help="--lake: the days trained on (default: every ds before --eval-ds)")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="budget and model size (default: the dataset's; lake for --lake)")
    p.add_argument("--config", help="the daily job's recipe instead of a preset: its YAML (e.g. "
                                    "jobs/configs/public.yaml): model, DNR, optimizer, schedule, epochs, hold-out")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="--config overrides, as train_daily takes them (dnr.lambda_c=0.3)")
    p.add_argument("--dnr-mode", choices=[m for m in SCORE_MODES],
                   help="score mode the DNR rows train on (default: the config's model.score_mode, "
                        "denoise for a preset)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--split", choices=("test", "valid"), default="test",
                   help="valid: evaluate on the last training day(s); the test days are not read")
    p.add_argument("--rows", nargs="+", choices=[r.name for r in ROWS], metavar="ROW",
                   help=f"subset of rows (default: all that apply): {', '.join(r.name for r in ROWS)}")
    p.add_argument("--steps", type=int, help="override the preset's steps")
    p.add_argument("--lr", type=float, help="override the preset's reranker learning rate")
    p.add_argument("--generator-lr", type=float, help="override the preset's generator learning rate")
    p.add_argument("--embedding-lr", type=float, help="override the preset's item-table learning rate")
    p.add_argument("--lambda-m", type=float)
    p.add_argument("--lambda-x", type=float)
    p.add_argument("--lambda-c", type=float)
    p.add_argument("--switch-fraction", type=float, help="lambda_e as a fraction of the steps")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the .md and .json go")
    p.add_argument("--tag", default="", help="file name suffix: quality_<dataset or lake_<eval-ds>>"
                                             "[_valid][_<tag>].md")
    args = p.parse_args(argv)
    if args.lake is not None and args.eval_ds is None:
        p.error("--lake needs --eval-ds (the day to evaluate; --split valid: the day after the one evaluated)")
    if args.lake is not None and args.ratings:
        p.error("--ratings applies to --dataset ml-latest-small, not to --lake")
    if args.dataset is not None and (args.eval_ds or args.train_days):
        p.error(f"--eval-ds and --train-days apply to --lake, not to --dataset {args.dataset} (whose days are fixed)")
    if args.set and not args.config:
        p.error("--set overrides the --config recipe; give --config too")
    if args.dataset == "ml-latest-small" and not args.ratings:
        p.error("--dataset ml-latest-small needs --ratings")
    args.preset = args.preset or args.dataset or "lake"
    return args


def configure(args: argparse.Namespace) -> BenchConfig:
    """The preset (or the daily recipe of ``--config``) with the command-line overrides."""
    cfg = daily_recipe(args.config, args.set) if args.config else PRESETS[args.preset]
    if args.dnr_mode:
        cfg = dataclasses.replace(cfg, dnr_mode=args.dnr_mode)
    dnr = {k: v for k, v in (("lambda_m", args.lambda_m), ("lambda_x", args.lambda_x),
                             ("lambda_c", args.lambda_c)) if v is not None}
    top = {k: v for k, v in (("steps", args.steps), ("switch_fraction", args.switch_fraction)) if v is not None}
    optim = dataclasses.replace(cfg.optim, **{k: v for k, v in (("lr", args.lr), ("generator_lr", args.generator_lr),
                                                                ("embedding_lr", args.embedding_lr))
                                              if v is not None})
    return dataclasses.replace(cfg, dnr=dataclasses.replace(cfg.dnr, **dnr), optim=optim, **top)


def load_split(args: argparse.Namespace, cfg: BenchConfig, log: Callable[[str], None]) -> tuple[Split, str, dict]:
    """The time split, a sentence on where it came from and facts for the .json's meta."""
    if args.lake is not None:
        return lake_split(args, cfg, log)
    if args.dataset == "synthetic":
        spec = SyntheticData()
        table = synthetic_table(spec)
        source = (f"Synthetic world (dnr.datasets.synth) seed {spec.world_seed} fixed across seeds, "
                  f"num_items={spec.num_items:,}, other WorldConfig defaults; {spec.requests_per_day:,} "
                  f"requests per training day, {spec.test_requests:,} on the test day.")
        eval_days = 1
    else:
        table = public_table(args.ratings)
        eval_days = PublicData().test_days
        source = ("MovieLens ml-latest-small via dnr.datasets.public (prepare_public defaults: BPR retriever, "
                  f"Platt-calibrated scores, 30 days); last {eval_days} days are the test set.")
    table = keep_valid(table, cfg.data.max_list_len, log)
    return time_split(table, eval_days, args.split == "valid"), source, {}


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s), "
            f"python {platform.python_version()}, torch {torch.__version__}")


def applicable_rows(args: argparse.Namespace, split: Split, log: Callable[[str], None]) -> list[Row]:
    """The rows asked for (default: all), less the oracle where the evaluation day lacks
    ``true_click_prob`` on any request (real logs have none)."""
    rows = [ROW_BY_NAME[n] for n in args.rows] if args.rows else list(ROWS)
    column = split.eval.column(C.true_click_prob) if C.true_click_prob in split.eval.column_names else None
    missing = split.eval.num_rows if column is None else column.null_count
    if missing and any(r.scorer == "oracle" for r in rows):
        rows = [r for r in rows if r.scorer != "oracle"]
        log(f"no oracle row: true_click_prob is null on {missing:,} of {split.eval.num_rows:,} evaluation requests")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)  # a shared 2-core machine: more threads only add contention
    cfg = configure(args)
    started, cpu_started = time.monotonic(), time.process_time()
    try:
        split, source, facts = load_split(args, cfg, print)
    except (LakeError, SchemaError) as error:  # the message names the table, day or column: no traceback
        print(f"quality.py: error: {error}", file=sys.stderr)
        return 2
    rows = applicable_rows(args, split, print)
    print(f"data ready in {time.monotonic() - started:.0f}s: {source}")
    print("\n".join(describe(split, cfg, rows, args.seeds)))

    results = run_benchmark(split, rows, args.seeds, cfg)
    total, cpu = time.monotonic() - started, time.process_time() - cpu_started
    name = args.dataset or "lake"
    header = table_header(name, split, cfg, args.seeds,
                          f"{source} Machine: {machine()}; wall time {total / 60:.1f} min, "
                          f"process CPU time {cpu / 60:.1f} min.")
    intervals = bootstrap(results)
    text = markdown(results, header, intervals)
    print("\n" + text)
    stem = (f"quality_{args.dataset}" if args.dataset else f"quality_lake_{args.eval_ds}") + \
        ("" if args.split == "test" else "_valid") + (f"_{args.tag}" if args.tag else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.md").write_text(text)
    meta = {"dataset": name, "preset": None if args.config else args.preset, "recipe": args.config or cfg.recipe,
            "split": args.split,
            "argv": sys.argv[1:] if argv is None else argv, "config": dataclasses.asdict(cfg),
            "source": source, **facts, "machine": machine(), "wall_seconds": round(total, 1),
            "cpu_seconds": round(cpu, 1), "train_days": split.train_days, "eval_days": split.eval_days}
    (args.out / f"{stem}.json").write_text(json.dumps(to_json(results, meta, intervals), indent=1, default=str) + "\n")
    print(f"wrote {args.out / stem}.md and .json ({total / 60:.1f} min)")
    return 0
