"""The promotion gate: a pure function of the replay summary and the gate config.

Every check is evaluated and reported, passed or not, so a report always says why; the
candidate is promoted only when all of them pass:

=================  ==========================================================================
check              passes when
=================  ==========================================================================
requests           requests with a positive (what the metrics average over) >= min_requests
finite_scores      the candidate gave no NaN / inf score to a real candidate
score_spread       the std of the candidate's logits >= min_score_std (not a constant model)
not_tied           the fraction of requests whose candidates all got one score <= max_tied
primary            lower end of the interval of (candidate - reference) on the primary metric
                   >= -tolerance: a non-inferiority test, the reference being the baseline model
                   or, when there is none, the retriever order
guardrail:<m>      mean difference (candidate - reference) on metric m >= -guardrail_tolerance
retriever_floor    candidate's primary metric >= the retriever order's - retriever_tolerance
=================  ==========================================================================

Non-inferiority on the interval rather than the point estimate makes a small evaluation day
conservative: with few requests the interval is wide and the gate keeps the current model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from dnr.config import GateConfig
from dnr.evaluation.bootstrap import DeltaInterval


@dataclass
class ReplaySummary:
    """What the gate and the report read (made by ``dnr.evaluation.replay.summarize``)."""

    metrics: dict[str, dict[str, float]]
    """arm -> metric name -> value (MetricAccumulator.compute of that arm)."""
    deltas: dict[str, dict[str, DeltaInterval]]
    """"candidate-<reference>" -> metric -> paired difference with its interval."""
    sanity: dict[str, dict[str, float]]
    """model arm -> non-finite count, score mean/std, tied fraction."""
    reference: str
    """baseline (a model) or retriever (no baseline model)."""
    calibration: dict[str, list[list[float]]] = field(default_factory=dict)
    """arm -> [count, sum of predicted probability, sum of labels] per probability bin."""
    delta_hist: list[float] = field(default_factory=list)
    """Counts of the per-request primary-metric difference (candidate - reference) per bin."""
    delta_edges: list[float] = field(default_factory=list)

    def delta(self, metric: str, against: str | None = None) -> DeltaInterval:
        return self.deltas[f"candidate-{against or self.reference}"][metric]


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.detail}"


@dataclass(frozen=True)
class Decision:
    promote: bool
    checks: tuple[Check, ...]

    @property
    def label(self) -> str:
        return "promote" if self.promote else "reject"

    @property
    def reasons(self) -> list[str]:
        """Every check as one line, the failed ones first."""
        ordered = sorted(self.checks, key=lambda c: c.passed)
        return [c.line() for c in ordered]


def _interval_text(d: DeltaInterval) -> str:
    return f"{d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}] over {d.requests:,} requests"


def decide(summary: ReplaySummary, cfg: GateConfig) -> Decision:
    """Run every check of the module docstring; promote only if all pass."""
    cand = summary.metrics["candidate"]
    sanity = summary.sanity["candidate"]
    ref, primary = summary.reference, cfg.primary_metric
    checks = [
        Check("requests", cand["requests_ranked"] >= cfg.min_requests,
              f"{int(cand['requests_ranked']):,} requests with a positive "
              f"(of {int(cand['requests']):,}); need >= {cfg.min_requests:,}"),
        Check("finite_scores", sanity["nonfinite_scores"] == 0,
              f"{int(sanity['nonfinite_scores']):,} NaN/inf scores on real candidates"),
        Check("score_spread", sanity["score_std"] >= cfg.min_score_std,
              f"logit std {sanity['score_std']:.3g}; need >= {cfg.min_score_std:g}"),
        Check("not_tied", sanity["tied_fraction"] <= cfg.max_tied_fraction,
              f"{sanity['tied_fraction']:.1%} of requests have all candidates tied; "
              f"allowed <= {cfg.max_tied_fraction:.0%}"),
    ]
    d = summary.delta(primary)
    checks.append(Check(
        "primary", not math.isnan(d.low) and d.low >= -cfg.tolerance,
        f"{primary} candidate - {ref}: {_interval_text(d)} ({cfg.confidence:.0%} interval); "
        f"lower end must be >= {-cfg.tolerance:+.4f}"))
    for metric in cfg.guardrails:
        g = summary.delta(metric)
        checks.append(Check(
            f"guardrail:{metric}", not math.isnan(g.mean) and g.mean >= -cfg.guardrail_tolerance,
            f"{metric} candidate - {ref}: {_interval_text(g)}; mean must be >= "
            f"{-cfg.guardrail_tolerance:+.4f}"))
    floor = summary.delta(primary, "retriever")
    checks.append(Check(
        "retriever_floor", not math.isnan(floor.mean) and floor.mean >= -cfg.retriever_tolerance,
        f"{primary} candidate {cand[primary]:.4f} vs retriever order "
        f"{summary.metrics['retriever'][primary]:.4f} (difference {floor.mean:+.4f}); "
        f"must be >= {-cfg.retriever_tolerance:+.4f}"))
    return Decision(promote=all(c.passed for c in checks), checks=tuple(checks))
