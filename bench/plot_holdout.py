"""Hold-out curves of a quality run under the daily recipe: one panel per dataset, N@6 of the
run's 10% hold-out against the step, every seed of the chosen rows, the kept step marked.

    python bench/plot_holdout.py bench/results/quality_lake_2024-01-05_ml-1m_recipe.json \
        bench/results/quality_lake_2024-01-05_gowalla_recipe.json --rows "PRM add" "DNR-B" \
        --out bench/results/holdout_curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = ("tab:gray", "tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="bench/quality.py .json files (--config runs)")
    parser.add_argument("--rows", nargs="+", default=["PRM add", "DNR-B"])
    parser.add_argument("--out", type=Path, default=Path("bench/results/holdout_curves.png"))
    args = parser.parse_args()
    fig, axes = plt.subplots(1, len(args.results), figsize=(6 * len(args.results), 4), squeeze=False)
    for ax, path in zip(axes[0], args.results):
        report = json.loads(path.read_text())
        for colour, row in zip(COLOURS, args.rows):
            for seed, run in report["rows"].get(row, {}).items():
                steps, values = zip(*run["curve"])
                ax.plot(steps, values, color=colour, alpha=0.8, label=row if seed == "0" else None)
                best = dict(run["curve"]).get(run["best_step"])
                if best is not None:
                    ax.scatter([run["best_step"]], [best], color=colour, marker="o", s=18)
        meta = report["meta"]
        ax.set_title(f"{Path(meta['lake']).name}: hold-out N@6 (dots: kept step)")
        ax.set_xlabel("step")
        ax.set_ylabel("hold-out N@6")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
