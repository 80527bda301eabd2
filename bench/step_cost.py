"""Where a DNR step's cost goes, and what two ways of cutting it buy (issue 12), in memory, one
torch thread, at the sizes of ``jobs/configs/local.yaml`` (as ``bench/throughput.py``):

1. ``shared_context``: the DNR heuristic reranker half-step as it was (one forward over the batch
   stacked twice along B, so the item and history lookups and the user pooling run for both
   copies) against the shipped one (``PRMReranker.forward(batch, extra_scores=...)``: those run
   once). Same losses, same gradients (``tests/unit/test_models.py``); the two take turns step by
   step on fresh copies of the same model.
2. ``context_share``: of one PRM forward + backward, the part that does not depend on the scores
   (lookups + pooling), timed alone.
3. ``compile``: the three step kinds of ``bench/throughput.py`` with the reranker's encoder
   eager, then under ``torch.compile`` (inductor, ``dynamic=True``: the list length varies per
   batch); the compile warm-up is timed apart.

    python bench/step_cost.py            # ~3 minutes on a 2-core VM
    python bench/step_cost.py --quick    # fewer steps, no compile pass
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.throughput import _batches, _fresh_parts, mode_config  # noqa: E402
from dnr.datasets.synth import make_requests  # noqa: E402
from dnr.datasets.synth_world import WorldConfig  # noqa: E402
from dnr.losses import masked_bce  # noqa: E402
from dnr.models import synthesize_scores  # noqa: E402
from dnr.training.step import _apply, train_step  # noqa: E402

STEP_MODES = ("prm", "dnr_heuristic", "dnr_adversarial")


def _stacked(batch, synthetic: torch.Tensor):
    """The batch twice along B, real then synthetic scores: the forward before issue 12."""
    def twice(t):
        return torch.cat([t, t])

    return replace(batch, item_ids=twice(batch.item_ids), scores=torch.cat([batch.scores, synthetic]),
                   labels=twice(batch.labels), mask=twice(batch.mask), label_mask=twice(batch.label_mask),
                   history_ids=twice(batch.history_ids), history_mask=twice(batch.history_mask))


def _heuristic_half_step(parts, batch, cfg, shared: bool) -> None:
    with torch.no_grad():
        synthetic = synthesize_scores(parts.heuristic, batch, None)
    logits = (parts.reranker(batch, extra_scores=synthetic) if shared
              else parts.reranker(_stacked(batch, synthetic)))
    real, copy = logits.chunk(2)
    loss = (masked_bce(real, batch.labels, batch.label_mask)
            + cfg.dnr.lambda_m * masked_bce(copy, batch.labels, batch.label_mask))
    _apply(loss, parts.reranker_opt, cfg.optim.grad_clip)


def _median_ms(values: list[float]) -> float:
    return float(np.median(values)) * 1e3


def shared_context(table, steps: int) -> dict:
    cfg = mode_config("dnr_heuristic")
    batches = _batches(table, cfg, steps + 1)
    parts = {"stacked": _fresh_parts(cfg), "shared": _fresh_parts(cfg)}
    for name, p in parts.items():
        _heuristic_half_step(p, batches[0], cfg, name == "shared")
    seconds = {name: [] for name in parts}
    for batch in batches[1:]:
        for name, p in parts.items():
            start = time.perf_counter()
            _heuristic_half_step(p, batch, cfg, name == "shared")
            seconds[name].append(time.perf_counter() - start)
    out = {f"{name}_ms": _median_ms(v) for name, v in seconds.items()}
    out["shared_vs_stacked"] = out["shared_ms"] / out["stacked_ms"]
    return out


def context_share(table, steps: int) -> dict:
    cfg = mode_config("prm")
    reranker = _fresh_parts(cfg).reranker
    batches = _batches(table, cfg, steps)

    def timed(fn) -> float:
        seconds = []
        for batch in batches:
            reranker.zero_grad(set_to_none=True)
            start = time.perf_counter()
            fn(batch)
            seconds.append(time.perf_counter() - start)
        return _median_ms(seconds)

    def context_only(batch):
        items, user = reranker.context(batch)
        (items.sum() + user.sum()).backward()

    def whole(batch):
        reranker(batch).sum().backward()

    timed(whole)  # warm-up
    out = {"context_forward_backward_ms": timed(context_only), "forward_backward_ms": timed(whole)}
    out["context_share"] = out["context_forward_backward_ms"] / out["forward_backward_ms"]
    return out


def step_times(table, steps: int, compiled: bool) -> dict:
    cfgs = {m: mode_config(m) for m in STEP_MODES}
    batches = {m: _batches(table, cfg, steps + 3) for m, cfg in cfgs.items()}
    parts = {m: _fresh_parts(cfg) for m, cfg in cfgs.items()}
    if compiled:
        for p in parts.values():
            p.reranker.encoder = torch.compile(p.reranker.encoder, dynamic=True)
    start = time.perf_counter()
    for m, cfg in cfgs.items():
        for i in range(3):  # warm-up (and, compiled, the compilations)
            train_step(batches[m][i], parts[m], i, cfg.model, cfg.dnr, cfg.optim)
    warmup_s = time.perf_counter() - start
    seconds = {m: [] for m in cfgs}
    for i in range(3, steps + 3):
        for m, cfg in cfgs.items():
            start = time.perf_counter()
            train_step(batches[m][i], parts[m], i, cfg.model, cfg.dnr, cfg.optim)
            seconds[m].append(time.perf_counter() - start)
    median = {m: _median_ms(v) for m, v in seconds.items()}
    return {"step_ms_median": median, "warmup_s": warmup_s,
            "vs_prm": {m: median[m] / median["prm"] for m in STEP_MODES if m != "prm"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 steps, no compile pass")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--out", default="bench/results/step_cost.json")
    args = parser.parse_args()
    steps = 8 if args.quick else args.steps
    torch.set_num_threads(1)
    started = time.perf_counter()
    table = make_requests(WorldConfig(seed=0), dt.date(2026, 1, 1), np.arange(128 * (steps + 4)))
    result = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs, no GPU, "
                         f"Python {platform.python_version()}, torch {torch.__version__}, 1 torch thread",
              "command": " ".join(["python"] + sys.argv), "steps": steps,
              "load_average_start": os.getloadavg()[0]}
    result["shared_context"] = shared_context(table, steps)
    print(f"heuristic reranker half-step: stacked {result['shared_context']['stacked_ms']:.1f} ms, "
          f"shared context {result['shared_context']['shared_ms']:.1f} ms "
          f"({result['shared_context']['shared_vs_stacked']:.3f}x)", flush=True)
    result["context_share"] = context_share(table, steps)
    print(f"PRM forward+backward {result['context_share']['forward_backward_ms']:.1f} ms, of it the "
          f"context {result['context_share']['context_forward_backward_ms']:.1f} ms", flush=True)
    variants = (False,) if args.quick else (False, True)
    result["steps_by_encoder"] = {}
    for compiled in variants:
        name = "compiled" if compiled else "eager"
        times = result["steps_by_encoder"][name] = step_times(table, steps, compiled)
        print(f"{name}: " + ", ".join(f"{m} {v:.1f} ms" for m, v in times["step_ms_median"].items())
              + f"; warm-up {times['warmup_s']:.0f} s", flush=True)
    result["load_average_end"] = os.getloadavg()[0]
    result["wall_s"] = time.perf_counter() - started
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} ({result['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
