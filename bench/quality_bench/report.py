"""The report of a quality run: paired bootstrap intervals of the N@K differences, the markdown
tables (metrics, differences, cost) and the .json."""

from __future__ import annotations

import math

import numpy as np

from bench.quality_bench.rows import ABLATION_ROWS, BASELINE, DEGRE_ROWS, DNR_ROWS, K, METRICS, NAIVE_ROWS
from bench.quality_bench.run import Results
from dnr.evaluation.bootstrap import DeltaInterval, PairedBootstrap, poisson_weights

REPLICATES, CONFIDENCE = 2000, 0.95
"""The paired bootstrap of the N@K differences: Poisson replicates and interval coverage."""


def paired_intervals(deltas: dict[tuple[str, str], np.ndarray], request_hashes: np.ndarray,
                     chunk: int = 4096) -> dict[tuple[str, str], DeltaInterval]:
    """Mean of each per-request difference and its interval: the project's paired Poisson
    bootstrap (``dnr.evaluation.bootstrap``, as in the replay job), ``REPLICATES`` replicates.

    ``deltas``: (row, baseline) -> [R] per-request difference (NaN = request excluded);
    ``request_hashes``: [R] the requests' id hashes, which fix the weights: every comparison sees
    the same resamples, and a re-run gives the same intervals. Weights are [chunk, REPLICATES]
    at a time, so a large evaluation day does not need R x REPLICATES of memory.
    """
    boots = {key: PairedBootstrap.empty(REPLICATES) for key in deltas}
    for key, delta in deltas.items():
        if len(delta) != len(request_hashes):
            raise ValueError(f"{key}: {len(delta)} per-request values for {len(request_hashes)} requests")
    for lo in range(0, len(request_hashes), chunk):
        weights = poisson_weights(request_hashes[lo:lo + chunk], REPLICATES)
        for key, delta in deltas.items():
            boots[key].add(delta[lo:lo + chunk], weights)
    return {key: boot.interval(CONFIDENCE) for key, boot in boots.items()}


def seed_mean_per_request(results: Results, row: str) -> np.ndarray:
    return np.mean([results.per_request[row][s] for s in results.seeds], axis=0)


def comparisons(results: Results) -> list[tuple[str, str]]:
    """(row, baseline) pairs of the differences table: DNR against each naive mode and the
    retriever order, DeGRe against DNR-B, PRM concat and the retriever order, the cheaper-step
    options against DNR-B."""
    have = set(results.rows)
    pairs = [(d, n) for d in DNR_ROWS for n in (*NAIVE_ROWS, BASELINE) if {d, n} <= have]
    pairs += [(d, n) for d in DEGRE_ROWS for n in ("DNR-B", "PRM concat", BASELINE) if {d, n} <= have]
    pairs += [(o, "DNR-B") for o in ("DNR-B half synthetic", "DNR-B 0.3 synthetic", *ABLATION_ROWS)
              if {o, "DNR-B"} <= have]
    return pairs


def bootstrap(results: Results) -> dict[tuple[str, str], DeltaInterval]:
    """The N@K intervals of every comparison and of every row against ``BASELINE``, on the
    seed-averaged per-request N@K."""
    pairs = comparisons(results)
    if BASELINE in results.rows:
        pairs += [(row, BASELINE) for row in results.rows if row != BASELINE]
    deltas = {(a, b): seed_mean_per_request(results, a) - seed_mean_per_request(results, b)
              for a, b in dict.fromkeys(pairs)}
    return paired_intervals(deltas, results.request_hashes)


def ratio_to_baseline(results: Results, row: str) -> float:
    """The row's mean N@K over the retriever order's (NaN if that is 0)."""
    base = results.summary(BASELINE, f"N@{K}")[0]
    return results.summary(row, f"N@{K}")[0] / base if base > 0 else math.nan


def interval_text(interval: DeltaInterval) -> str:
    return f"{interval.mean:+.4f} [{interval.low:+.4f}, {interval.high:+.4f}]"


def relative_cells(results: Results, row: str, intervals: dict[tuple[str, str], DeltaInterval]) -> list[str]:
    """The row's N@K over the retriever order's, and the interval of their difference with its
    verdict: better / worse when the interval excludes 0, else n.s."""
    ratio = f"{ratio_to_baseline(results, row):.3f}x"
    if row == BASELINE:
        return [ratio, "(reference)"]
    interval = intervals[(row, BASELINE)]
    verdict = "better" if interval.low > 0 else "worse" if interval.high < 0 else "n.s."
    return [ratio, f"{interval_text(interval)} {verdict}"]


def markdown(results: Results, header: str,
             intervals: dict[tuple[str, str], DeltaInterval] | None = None) -> str:
    """The table (mean ± std over seeds, N@K relative to the retriever order), then each DNR
    variant against each naive mode. ``intervals``: ``bootstrap(results)``, computed if None."""
    intervals = bootstrap(results) if intervals is None else intervals
    relative = [f"N@{K} / retriever", f"N@{K} − retriever [95% CI]"] if BASELINE in results.rows else []
    lines = [header, "", "| row | " + " | ".join([*METRICS, *relative]) + " |",
             "|---" * (len(METRICS) + len(relative) + 1) + "|"]
    for row in results.rows:
        cells = [f"{m:.4f} ± {s:.4f}" for m, s in (results.summary(row, metric) for metric in METRICS)]
        cells += relative_cells(results, row, intervals) if relative else []
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    bootstrap_note = (f"{CONFIDENCE:.0%} interval of a paired bootstrap over the evaluation requests, "
                      f"{REPLICATES:,} Poisson replicates keyed by request id as in the replay job "
                      "(dnr.evaluation.bootstrap)")
    if relative:
        lines += ["", f"*N@{K} / retriever*: mean N@{K} over the retriever order's. *N@{K} − retriever*: "
                      f"seed-averaged per-request difference, {bootstrap_note}; better / worse: the "
                      "interval excludes 0, n.s.: it does not."]
    pairs = comparisons(results)
    if pairs:
        lines += ["", f"N@{K} differences. *seeds*: mean ± std over seeds of the per-seed difference; "
                      "*beyond spread*: mean difference > std(DNR) + std(baseline) of the table above. "
                      f"*bootstrap*: seed-averaged per-request difference, {bootstrap_note}.", "",
                  "| comparison | seeds | beyond spread | bootstrap mean [95% CI] |", "|---|---|---|---|"]
        lines += [difference_line(results, row, base, intervals[(row, base)]) for row, base in pairs]
    lines += cost_lines(results)
    return "\n".join(lines) + "\n"


def difference_line(results: Results, row: str, base: str, interval: DeltaInterval) -> str:
    per_seed = np.array([results.metrics[row][s][f"N@{K}"] - results.metrics[base][s][f"N@{K}"]
                         for s in results.seeds])
    spread = results.summary(row, f"N@{K}")[1] + results.summary(base, f"N@{K}")[1]
    beyond = ("n/a (1 seed)" if len(per_seed) < 2 else "yes" if per_seed.mean() > spread
              else "no (worse)" if per_seed.mean() < -spread else "no")
    std = per_seed.std(ddof=1) if len(per_seed) > 1 else 0.0
    return f"| {row} − {base} | {per_seed.mean():+.4f} ± {std:.4f} | {beyond} | {interval_text(interval)} |"


def cost_lines(results: Results) -> list[str]:
    """Mean over seeds of each trained row's training, inference and mining times."""
    rows = [r for r in results.rows if r in results.cost]
    if not rows:
        return []
    lines = ["", "Cost, mean over seeds, in this process (1 torch thread, shared CPU: compare rows, not "
             "machines). *train*: one training step of a batch; *inference*: scoring the evaluation "
             "requests in batches of 512, per request; *mining*: DeGRe's beam search + dense targets "
             "with the trained evaluator on 20 training batches, per request.", "",
             "| row | train ms/step | inference ms/request | mining ms/request |", "|---|---|---|---|"]
    for row in rows:
        per_seed = list(results.cost[row].values())

        def mean(key: str) -> str:
            values = [c[key] for c in per_seed if key in c]
            return f"{np.mean(values):.3f}" if values else "–"

        lines.append(f"| {row} | {mean('train_ms_per_step')} | {mean('infer_ms_per_request')} | "
                     f"{mean('mining_ms_per_request')} |")
    return lines


def to_json(results: Results, meta: dict,
            intervals: dict[tuple[str, str], DeltaInterval] | None = None) -> dict:
    """Per-seed numbers; ``vs_retriever`` and ``comparisons``: the N@K intervals of the tables."""
    intervals = bootstrap(results) if intervals is None else intervals
    return {
        "meta": meta,
        "seeds": results.seeds,
        "rows": {
            row: {str(s): {**results.metrics[row][s], "seconds": round(results.seconds[row][s], 2),
                           **results.cost.get(row, {}).get(s, {}), **results.training.get(row, {}).get(s, {})}
                  for s in results.seeds}
            for row in results.rows
        },
        "vs_retriever": {row: {"ratio": ratio_to_baseline(results, row), **intervals[(row, b)].to_dict()}
                         for (row, b) in intervals if b == BASELINE},
        "comparisons": {f"{row} − {base}": intervals[(row, base)].to_dict() for row, base in comparisons(results)},
    }
