"""The DNR step's cost against another revision's, as ratios measured in one run.

Runs ``bench/throughput.py``'s in-memory step timing (local.yaml, one torch thread, the modes
taking turns step by step) in a worktree of ``--ref`` and in this tree, alternately, ``--rounds``
times each, in subprocesses: both trees see the same load. In each tree the modes are:

* ``prm``: ``model.score_mode=concat``, plain BCE (the naive baseline);
* ``dnr_heuristic`` / ``dnr_adversarial``: the tree's shipped DNR (local.yaml as it is) before
  and after the generator switch.

Reports each tree's DNR / PRM step-time ratios (medians over steps and rounds), and this tree's
DNR step against the reference's in ms. ``bench/README.md`` ("DNR on real logs") has the result.

    python bench/dnr_step_vs_ref.py --ref b4dbf2a       # ~3 minutes on a 2-core VM
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODES = {
    "prm": ["model.score_mode=concat", "dnr.enabled=false"],
    "dnr_heuristic": ["dnr.lambda_e=1000000000"],
    "dnr_adversarial": ["dnr.lambda_e=0"],
}
REF_MODES = {  # before dnr.enabled existed: concat was plain BCE, DNR meant score_mode=denoise
    "prm": ["model.score_mode=concat"],
    "dnr_heuristic": ["dnr.lambda_e=1000000000"],
    "dnr_adversarial": ["dnr.lambda_e=0"],
}
TIMING = """
import json, sys, datetime as dt
import numpy as np, torch
sys.path.insert(0, ".")
from bench import throughput as T
from dnr.config import load_config
from dnr.datasets.synth import make_requests
from dnr.datasets.synth_world import WorldConfig
torch.set_num_threads(1)
modes = json.loads(sys.argv[1])
cfgs = {m: load_config(T.LOCAL_CONFIG, o) for m, o in modes.items()}
table = make_requests(WorldConfig(seed=0), dt.date(2026, 1, 1), np.arange(int(sys.argv[3])))
print(json.dumps(T.in_memory(cfgs, table, int(sys.argv[2]))))
"""


def time_tree(tree: Path, modes: dict, steps: int, requests: int) -> dict[str, list[float]]:
    out = subprocess.run([sys.executable, "-c", TIMING, json.dumps(modes), str(steps), str(requests)],
                         cwd=tree, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", required=True, help="git revision to compare with (e.g. the last before a change)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per mode and round")
    parser.add_argument("--out", default=str(ROOT / "bench/results/dnr_step_vs_ref.json"))
    args = parser.parse_args()
    rev = subprocess.run(["git", "rev-parse", "--short", args.ref], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        ref_tree = Path(tmp) / f"ref-{rev}"
        subprocess.run(["git", "worktree", "add", "--detach", str(ref_tree), rev], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            seconds = {"ref": {m: [] for m in REF_MODES}, "this": {m: [] for m in MODES}}
            requests = 128 * (args.steps + 2)
            for r in range(args.rounds):
                for name, tree, modes in (("ref", ref_tree, REF_MODES), ("this", ROOT, MODES)):
                    for mode, values in time_tree(tree, modes, args.steps, requests).items():
                        seconds[name][mode] += values
                    print(f"round {r + 1}/{args.rounds}: {name} done", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(ref_tree)], cwd=ROOT, check=False)
    median = {tree: {m: float(np.median(v)) * 1e3 for m, v in modes.items()} for tree, modes in seconds.items()}
    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "ref": rev,
        "machine": f"{platform.machine()}, 1 torch thread, python {platform.python_version()}",
        "args": vars(args), "median_ms": median,
        "dnr_vs_prm": {tree: {m: median[tree][m] / median[tree]["prm"] for m in ("dnr_heuristic", "dnr_adversarial")}
                       for tree in median},
        "this_vs_ref_ms": {m: median["this"][m] / median["ref"][m] for m in MODES},
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("median_ms", "dnr_vs_prm", "this_vs_ref_ms")}, indent=1))


if __name__ == "__main__":
    main()
