"""Build ``request_logs`` from a public ratings file (MovieLens or a generic user,item CSV).

    python jobs/prepare_public.py --ratings ../shared/data/ml-latest-small/ratings.csv --lake ./lake

Trains an MF retriever on the earliest interactions, replays the later ones as requests with the
retriever's top candidates and future-rating labels, spreads them over ``--days`` days and writes
them to the lake. The choices (split, labels, score calibration, ds mapping) are documented in
``dnr/data/public.py``; the retriever and the calibration in ``dnr/data/public_retriever.py``.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from dnr.data.interactions import FORMATS, load_interactions
from dnr.data.public import (
    PublicDataConfig,
    build_request_logs,
    ensure_writable,
    format_summary,
    write_request_logs,
)
from dnr.storage import Lake

D = PublicDataConfig()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ratings", required=True, help="ratings/interactions file")
    p.add_argument("--lake", default="./lake", help="lake root: a local directory or s3://bucket/prefix")
    p.add_argument("--format", dest="fmt", choices=FORMATS, default=D.fmt)
    p.add_argument("--mode", choices=("error", "overwrite"), default="error",
                   help="what to do when request_logs already holds rows")
    p.add_argument("--min-rating", type=float, default=D.min_rating, help="positive label threshold")
    p.add_argument("--days", type=int, default=D.days, help="days the written requests are spread over")
    p.add_argument("--start-date", default=D.start_date, help="first ds, YYYY-MM-DD")
    p.add_argument("--candidates", type=int, default=D.candidates)
    p.add_argument("--history-len", type=int, default=D.history_len)
    p.add_argument("--retriever-fraction", type=float, default=D.retriever_fraction)
    p.add_argument("--calibration-fraction", type=float, default=D.calibration_fraction)
    p.add_argument("--session-gap-hours", type=float, default=D.session_gap_hours)
    p.add_argument("--label-window-days", type=float, default=D.label_window_days)
    p.add_argument("--min-history", type=int, default=D.min_history)
    p.add_argument("--seed", type=int, default=D.seed)
    p.add_argument("--dim", type=int, default=D.dim, help="retriever factor dimension")
    p.add_argument("--epochs", type=int, default=D.epochs, help="retriever training epochs")
    # the retriever's ops are small: on a shared 2-core machine one thread trained ml-latest-small
    # in 10 s and two threads in 95 s (threads spin-waiting for each other)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = vars(parse_args(argv))
    ratings, lake, mode = args.pop("ratings"), Lake(args.pop("lake")), args.pop("mode")
    torch.set_num_threads(args.pop("threads"))
    started = time.monotonic()
    try:
        cfg = PublicDataConfig(**args)
        ensure_writable(lake, mode)
        data = load_interactions(ratings, cfg.fmt)
        print(f"read {len(data):,} interactions from {ratings} ({data.fmt})")
        logs = build_request_logs(data, cfg)
        version = write_request_logs(logs.table, lake, mode)
    except (ValueError, FileExistsError) as err:  # bad file (InteractionFileError), config or lake
        print(f"prepare_public: {err}", file=sys.stderr)
        return 2
    days = list(logs.requests_per_day())
    print(format_summary(logs, cfg))
    print(f"wrote {logs.table.num_rows:,} requests to {lake.table_uri('request_logs')} "
          f"(Delta version {version}, partitions ds={days[0]}..{days[-1]}) in {time.monotonic() - started:.1f}s")
    print(f"next: python jobs/train_daily.py --lake {lake.root} --ds {days[-1]}"
          f"   # trains on {days[0]}..{days[-2] if len(days) > 1 else days[0]}, replays {days[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
