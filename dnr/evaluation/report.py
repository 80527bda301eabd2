"""The report a person reads: ``report.md`` with the metric table, the decision and three plots.

Written to ``<lake>/replay_reports/_reports/<report_id>/``::

    report.md            metric table per arm, differences with intervals, gate checks, lineage
    report.json          the same numbers for machines
    metrics.png          per-metric bars: candidate, baseline, retriever order, oracle
    delta_<metric>.png   distribution of the per-request difference on the primary metric
    calibration.png      predicted click probability vs observed click rate, per arm

Why ``_reports`` and not ``replay_reports/<id>/`` directly: ``replay_reports/`` is a Delta table,
and a full VACUUM (Spark's, or delta-rs ``vacuum(full=True)``) deletes every file of a table
directory that its log does not reference, except under ``_``-prefixed directories.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np

from dnr.evaluation.gate import Decision, ReplaySummary
from dnr.storage import Lake

TABLE_METRICS = ("N@6", "H@6", "M@6", "F1@6", "AUC", "AUC_pooled")
ARM_LABELS = {"candidate": "candidate", "baseline": "baseline", "retriever": "retriever order",
              "oracle": "oracle (true_click_prob)"}


def report_dir(lake: Lake, report_id: str) -> str:
    return lake.uri("replay_reports", "_reports", report_id)


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def render_markdown(summary: ReplaySummary, decision: Decision, header: dict, plots: list[str]) -> str:
    """The Markdown text: lineage header, metric table, differences, checks, plots."""
    arms = [a for a in ARM_LABELS if a in summary.metrics and summary.metrics[a]["requests"] > 0]
    lines = [f"# Replay evaluation {header['report_id']}", "",
             f"**Decision: {decision.label.upper()}**", ""]
    lines += [f"- {k}: {v}" for k, v in header.items() if k != "report_id"]
    lines += ["", "## Metrics", "", "| arm | " + " | ".join(TABLE_METRICS) + " | requests ranked |",
              "|---|" + "---|" * (len(TABLE_METRICS) + 1)]
    for arm in arms:
        m = summary.metrics[arm]
        lines.append(f"| {ARM_LABELS[arm]} | " + " | ".join(_fmt(m.get(k)) for k in TABLE_METRICS)
                     + f" | {int(m['requests_ranked']):,} |")
    lines += ["", "## Differences (paired, per request; Poisson bootstrap interval)", "",
              "| comparison | metric | mean | low | high | requests |", "|---|---|---|---|---|---|"]
    for pair, by_metric in summary.deltas.items():
        for metric, d in by_metric.items():
            lines.append(f"| {pair} | {metric} | {d.mean:+.4f} | {d.low:+.4f} | {d.high:+.4f} | {d.requests:,} |")
    lines += ["", "## Gate checks", ""] + [f"- {r}" for r in decision.reasons]
    lines += ["", "## Score sanity", "", "| model | non-finite | logit mean | logit std | all-tied requests |",
              "|---|---|---|---|---|"]
    for arm, s in summary.sanity.items():
        lines.append(f"| {arm} | {int(s['nonfinite_scores'])} | {s['score_mean']:.3f} | "
                     f"{s['score_std']:.3f} | {s['tied_fraction']:.1%} |")
    lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _finish(fig, ax, title: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_metrics(summary: ReplaySummary, path: Path) -> None:
    import matplotlib.pyplot as plt

    arms = [a for a in ARM_LABELS if a in summary.metrics and summary.metrics[a]["requests"] > 0]
    metrics = [m for m in TABLE_METRICS if m != "AUC_pooled"]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        values = [summary.metrics[arm].get(m, np.nan) for m in metrics]
        ax.bar(np.arange(len(metrics)) + i * width, values, width, label=ARM_LABELS[arm])
    ax.set_xticks(np.arange(len(metrics)) + width * (len(arms) - 1) / 2, metrics)
    ax.set_ylabel("value (higher is better)")
    _finish(fig, ax, "Replay metrics per arm", path)


def _plot_delta(summary: ReplaySummary, metric: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    edges, counts = np.asarray(summary.delta_edges), np.asarray(summary.delta_hist)
    d = summary.delta(metric)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", edgecolor="black", linewidth=0.3)
    ax.set_yscale("symlog")
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.axvline(d.mean, color="tab:red", label=f"mean {d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}]")
    ax.set_xlabel(f"per-request {metric}: candidate - {summary.reference}")
    ax.set_ylabel("requests")
    _finish(fig, ax, f"Distribution of per-request {metric} differences", path)


def _plot_calibration(summary: ReplaySummary, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8, label="perfect")
    for arm, (count, pred, label) in summary.calibration.items():
        count, pred, label = map(np.asarray, (count, pred, label))
        seen = count > 0
        ax.plot(pred[seen] / count[seen], label[seen] / count[seen], marker="o", label=ARM_LABELS[arm])
    ax.set_xlabel("mean predicted click probability (bin)")
    ax.set_ylabel("observed click rate")
    _finish(fig, ax, "Calibration (sigmoid of logits; retriever: its score)", path)


def write_report(lake: Lake, summary: ReplaySummary, decision: Decision, header: dict,
                 primary_metric: str) -> str:
    """Render the report and plots locally, then copy them into the lake; returns its URI."""
    import matplotlib

    matplotlib.use("Agg")  # headless: jobs run on cluster nodes without a display
    target = report_dir(lake, header["report_id"])
    with tempfile.TemporaryDirectory(prefix="dnr-report-") as tmp:
        out = Path(tmp)
        plots = []
        if summary.metrics["candidate"]["requests"] > 0:  # a day with no request has nothing to plot
            plots = ["metrics.png", f"delta_{primary_metric.replace('@', '')}.png", "calibration.png"]
            _plot_metrics(summary, out / plots[0])
            _plot_delta(summary, primary_metric, out / plots[1])
            _plot_calibration(summary, out / plots[2])
        (out / "report.md").write_text(render_markdown(summary, decision, header, plots))
        (out / "report.json").write_text(json.dumps(
            {"header": header, "decision": decision.label, "reasons": decision.reasons,
             "metrics": summary.metrics, "sanity": summary.sanity,
             "deltas": {p: {m: d.to_dict() for m, d in by.items()} for p, by in summary.deltas.items()}},
            indent=2, sort_keys=True, default=str))
        _copy_dir(lake, out, target)
    return target


def _copy_dir(lake: Lake, source: Path, target_uri: str) -> None:
    import pyarrow.fs as pafs

    if lake.is_s3:
        fs, path = lake.filesystem(), lake.fs_path(target_uri)
    else:
        fs, path = pafs.LocalFileSystem(), target_uri
    fs.create_dir(path, recursive=True)
    pafs.copy_files(str(source), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
