"""Build ``request_logs`` from a public ratings file (MovieLens or a generic user,item CSV) or from an
implicit-feedback benchmark split (``user item item ...`` per line: NGCF, LightGCN, KGAT)
(``dnr prepare``, ``python jobs/prepare_public.py``).

    dnr prepare --ratings ml-latest-small/ratings.csv --lake ./lake
    dnr prepare --lake ./lake --format lines --train train.txt --test test.txt [--valid valid.txt]

Ratings: trains an MF retriever on the earliest interactions, replays the later ones as requests
with the retriever's top candidates and future-rating labels, spreads them over ``--days`` days.
The choices (split, labels, score calibration, ds mapping) are documented in ``dnr/datasets/public.py``;
the retriever and the calibration in ``dnr/datasets/public_retriever.py``. Split files: the retriever
is trained on part of each user's train items, the rest label ``--train-days`` days of requests,
then come a valid day and the test day (``dnr/datasets/public_lines.py``). Both write to the lake.

A refusal is one line on stderr. Exit statuses (dnr.runtime): 0 written; 2 bad argument, input
file or config, or request_logs already holds rows (without --mode overwrite); 66 --lake is a file.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import pyarrow as pa
import torch

from dnr.datasets import public, public_lines
from dnr.datasets.interactions import FORMATS, load_interactions, load_user_lines
from dnr.datasets.public import PublicDataConfig, ensure_writable, write_request_logs
from dnr.datasets.public_lines import LINES_FORMAT, LinesConfig, SplitData
from dnr.runtime import EXIT_USAGE, JobArgumentParser, JobError, check_lake, refuse
from dnr.schemas import REQUEST_LOGS
from dnr.storage import Lake

D, L = PublicDataConfig(), LinesConfig()
# options of one input kind only; their defaults are None so that a misplaced one can be refused
RATINGS_ONLY = ("ratings", "min_rating", "days", "calibration_fraction", "session_gap_hours",
                "label_window_days", "min_history")
LINES_ONLY = ("train", "valid", "test", "train_days", "requests_per_user")


def _check_inputs(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--format lines takes --train/--test[/--valid]; every other format takes --ratings."""
    lines = args.fmt == LINES_FORMAT
    wrong = [o for o in (RATINGS_ONLY if lines else LINES_ONLY) if getattr(args, o) is not None]
    if wrong:
        flags = ", ".join("--" + o.replace("_", "-") for o in wrong)
        p.error(f"{flags}: not for --format lines (it takes --train/--test/--valid)" if lines
                else f"{flags}: only with --format lines")
    if lines and (args.train is None or args.test is None):
        p.error("--format lines needs --train and --test (and optionally --valid)")
    if not lines and args.ratings is None:
        p.error("--ratings is required (or --format lines with --train and --test)")


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    p = JobArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--ratings", help="ratings/interactions file (every format but lines)")
    p.add_argument("--train", help="--format lines: the train split file")
    p.add_argument("--valid", help="--format lines: the valid split file (optional)")
    p.add_argument("--test", help="--format lines: the test split file")
    p.add_argument("--lake", default="./lake", help="lake root: a local directory or s3://bucket/prefix")
    p.add_argument("--format", dest="fmt", choices=(*FORMATS, LINES_FORMAT), default=D.fmt)
    p.add_argument("--mode", choices=("error", "overwrite"), default="error",
                   help="what to do when request_logs already holds rows")
    p.add_argument("--min-rating", type=float, help=f"positive label threshold ({D.min_rating})")
    p.add_argument("--days", type=int, help=f"days the written requests are spread over ({D.days})")
    p.add_argument("--train-days", type=int, help=f"lines: days of training requests ({L.train_days})")
    p.add_argument("--requests-per-user", type=int,
                   help=f"lines: training requests per user, histories random subsets after the first "
                        f"({L.requests_per_user})")
    p.add_argument("--start-date", help=f"first ds, YYYY-MM-DD (ratings: the data's; lines: {L.start_date})")
    p.add_argument("--candidates", type=int, help=f"({D.candidates})")
    p.add_argument("--history-len", type=int, help=f"({D.history_len})")
    p.add_argument("--retriever-fraction", type=float,
                   help=f"ratings: earliest share ({D.retriever_fraction}); lines: share of each user's train "
                        f"items ({L.retriever_fraction})")
    p.add_argument("--calibration-fraction", type=float, help=f"({D.calibration_fraction})")
    p.add_argument("--session-gap-hours", type=float, help=f"({D.session_gap_hours})")
    p.add_argument("--label-window-days", type=float, help=f"({D.label_window_days})")
    p.add_argument("--min-history", type=int, help=f"({D.min_history})")
    p.add_argument("--seed", type=int, help=f"({D.seed})")
    p.add_argument("--dim", type=int, help=f"retriever factor dimension ({D.dim})")
    p.add_argument("--epochs", type=int, help=f"retriever training epochs ({D.epochs})")
    # the retriever's ops are small: on a shared 2-core machine one thread trained ml-latest-small
    # in 10 s and two threads in 95 s (threads spin-waiting for each other)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = p.parse_args(argv)
    _check_inputs(p, args)
    return args


def _config(cls, args: argparse.Namespace):
    """The config of ``cls`` with every option given on the command line, defaults for the rest."""
    given = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in given.items() if v is not None})


def _prepare_ratings(args: argparse.Namespace, lake: Lake) -> tuple[pa.Table, str]:
    cfg = _config(PublicDataConfig, args)
    ensure_writable(lake, args.mode)
    data = load_interactions(args.ratings, cfg.fmt)
    print(f"read {len(data):,} interactions from {args.ratings} ({data.fmt})")
    logs = public.build_request_logs(data, cfg)
    return logs.table, public.format_summary(logs, cfg)


def _prepare_lines(args: argparse.Namespace, lake: Lake) -> tuple[pa.Table, str]:
    cfg = _config(LinesConfig, args)
    ensure_writable(lake, args.mode)
    paths = {kind: getattr(args, kind) for kind in ("train", "valid", "test") if getattr(args, kind)}
    data = SplitData.from_files({kind: load_user_lines(path) for kind, path in paths.items()})
    print("read " + ", ".join(f"{kind} {path}" for kind, path in paths.items()) + f" ({LINES_FORMAT})")
    prep = public_lines.build_lines_logs(data, cfg)
    return prep.table, public_lines.format_summary(prep, cfg)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    try:
        lake = Lake(args.lake)
        check_lake(lake)
    except ValueError as error:
        return refuse("prepare_public", JobError(str(error)))
    except JobError as error:
        return refuse("prepare_public", error)
    torch.set_num_threads(args.threads)
    started = time.monotonic()
    prepare = _prepare_lines if args.fmt == LINES_FORMAT else _prepare_ratings
    try:
        table, summary = prepare(args, lake)
        version = write_request_logs(table, lake, args.mode)
    except (ValueError, FileExistsError) as err:  # bad file (InteractionFileError), config or lake
        return refuse("prepare_public", JobError(str(err), EXIT_USAGE))
    days = sorted(set(table[REQUEST_LOGS.col.ds].to_pylist()))
    print(summary)
    print(f"wrote {table.num_rows:,} requests to {lake.table_uri('request_logs')} "
          f"(Delta version {version}, partitions ds={days[0]}..{days[-1]}) in {time.monotonic() - started:.1f}s")
    print(f"next: python jobs/train_daily.py --lake {lake.root} --ds {days[-1]}"
          f"   # trains on {days[0]}..{days[-2] if len(days) > 1 else days[0]}, replays {days[-1]}")
    return 0

