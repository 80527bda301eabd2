"""Offline replay evaluation of a candidate model on one held-out day, and the promotion.

::

    result = run_replay(lake, cfg, candidate="latest", baseline="production", ds="2026-05-04")

1. Resolve the versions in the registry (``latest`` = the newest candidate of the model line,
   ``production`` = the production version, or none on a first deployment).
2. Read day ``ds`` at a pinned table version and validate it with the training code path
   (:class:`dnr.data.window.Window`): bad rows go to ``quarantine``, nothing is dropped silently.
3. Score every kept request with every arm: ``gate.num_scorers`` actors each take one shard
   of the validated stream (each loads each checkpoint once; one GPU per actor when the
   training config uses GPUs) and return the additive sums of their shard
   (:mod:`dnr.evaluation.scoring`); the driver adds one vector per actor.
4. The gate decides (:mod:`dnr.evaluation.gate`); the report (Markdown + plots) and one row of
   ``replay_reports`` record it; with ``promote=True`` the registry follows the decision
   (promote: candidate -> production and the previous production -> retired in one commit;
   reject: candidate -> rejected).
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
import warnings
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from dnr.config import JobConfig, config_from_dict
from dnr.data.window import QuarantineReport, Window, parse_ds
from dnr.evaluation.gate import Decision, ReplaySummary, decide
from dnr.evaluation.report import write_report
from dnr.evaluation.scoring import DELTA_EDGES, ReplayScorer, ReplaySpec, ReplayState, reduce_states
from dnr.registry import AlreadyProductionError, ModelVersion, ProductionChangedError, Registry
from dnr.schemas import REPLAY_REPORTS
from dnr.storage import Lake


@dataclass
class ReplayResult:
    """What the job prints and returns."""

    report_id: str
    ds: str
    candidate: str
    baseline: str | None
    decision: str
    reasons: list[str]
    summary: ReplaySummary = field(repr=False)
    report_uri: str
    table_version: int
    rows_read: int
    rows_quarantined: int
    requests_evaluated: int
    registry_action: str | None = None
    """promoted | rejected | "not applied: ..." (production moved meanwhile) | None (not asked)."""
    seconds: float = 0.0
    requests_excluded: int = 0
    """kept requests not evaluated: their request_id is in the candidate's training window"""
    note: str | None = None
    """"no requests" when the day has none to evaluate (the gate then rejects on min_requests)"""


def resolve_versions(registry: Registry, model_name: str, candidate: str,
                     baseline: str) -> tuple[ModelVersion, ModelVersion | None]:
    """``candidate``: a version or ``latest``; ``baseline``: a version, ``production`` or ``none``."""
    if candidate == "latest":
        pending = [v for v in registry.versions(model_name) if v.status == "candidate"]
        if not pending:
            raise ValueError(f"no candidate version of model {model_name!r} in {registry.uri} "
                             f"(train one first, or name a version)")
        cand = pending[-1]
    else:
        cand = registry.get(candidate)
    if baseline == "none":
        base = None
    elif baseline == "production":
        base = registry.production(cand.model_name)
    else:
        base = registry.get(baseline)
    if base is not None and base.version == cand.version:
        raise ValueError(f"candidate and baseline are the same version {cand.version}")
    return cand, base


def held_out_day(cand: ModelVersion, partitions: list[str], ds: str | None) -> str:
    """``ds`` checked against the candidate's training window; default: the day after it."""
    if ds is None:
        if not cand.window_end:
            raise ValueError(f"{cand.version} has no training window; pass --ds")
        ds = (dt.date.fromisoformat(cand.window_end) + dt.timedelta(days=1)).isoformat()
    parse_ds(ds, "--ds")
    if cand.window_end and ds <= cand.window_end:
        raise ValueError(f"ds={ds} is inside {cand.version}'s training window "
                         f"{cand.window_start}..{cand.window_end}: not a held-out day")
    if ds not in partitions:
        raise ValueError(f"request_logs has no partition ds={ds} (newest: "
                         f"{partitions[-1] if partitions else '-'})")
    return ds


def summarize(state: ReplayState, confidence: float) -> ReplaySummary:
    spec = state.spec
    deltas = {}
    for key, boot in state.bootstraps.items():
        pair, metric = key.split("/", 1)
        deltas.setdefault(pair, {})[metric] = boot.interval(confidence)
    return ReplaySummary(
        metrics={arm: acc.compute() for arm, acc in state.accumulators.items()},
        deltas=deltas,
        sanity={arm: state.sanity_summary(arm) for arm in spec.checkpoints},
        reference=spec.reference,
        calibration={arm: table.tolist() for arm, table in state.calibration.items()},
        delta_hist=state.delta_hist.tolist(),
        delta_edges=DELTA_EDGES.tolist(),
    )


def score_day(data, spec: ReplaySpec, lake: Lake, cfg: JobConfig) -> ReplayState:
    """Score the validated rows with ``gate.num_scorers`` actors, one shard of the stream each.

    Each actor adds up its shard and returns one state vector (:meth:`ReplayScorer.score_shard`),
    so the driver receives ``num_scorers`` vectors whatever the size of the day (a vector per
    batch was 240 KB per 512 requests: 92 MB of the driver's object-store pages on a
    200,000-request day, bench/README.md "Scale").
    """
    import ray

    use_gpu = cfg.train.use_gpu and ray.cluster_resources().get("GPU", 0) >= 1
    n = cfg.gate.num_scorers
    actor = ray.remote(num_cpus=1, num_gpus=1 if use_gpu else 0)(ReplayScorer)
    scorers = [actor.remote(spec=spec, lake_root=lake.root, use_gpu=use_gpu) for _ in range(n)]
    try:
        shards = data.streaming_split(n, equal=False)
        vectors = ray.get([s.score_shard.remote(shard, cfg.gate.batch_size)
                           for s, shard in zip(scorers, shards)])
    finally:
        for scorer in scorers:
            ray.kill(scorer)
    return reduce_states(spec, vectors)


def run_replay(lake: Lake, cfg: JobConfig, candidate: str = "latest", baseline: str = "production",
               ds: str | None = None, promote: bool = False, verbose: bool = True,
               before_commit=None) -> ReplayResult:
    """Evaluate, decide, report; with ``promote`` apply the decision to the registry. Needs a Ray.

    ``before_commit`` (no arguments) runs just before the registry changes, e.g. the daily
    job's lease check: it raises to stop a run that lost the lake to another one.
    """
    from dnr.data.window import table_partitions

    say = print if verbose else (lambda *a, **k: None)
    started = time.monotonic()
    registry = Registry(lake)
    cand, base = resolve_versions(registry, cfg.train.model_name, candidate, baseline)
    # the promotion below commits only if this is still production by then
    current = registry.production(cand.model_name)
    production = current.version if current is not None else None
    table_version, partitions = table_partitions(lake)
    ds = held_out_day(cand, partitions, ds)
    report_id = f"{cand.version}-{ds}-{uuid.uuid4().hex[:8]}"
    say(f"[replay] {report_id}: candidate {cand.version} vs "
        f"{base.version if base else 'the retriever order (no baseline model)'} on ds={ds} "
        f"(table v{table_version})")

    cand_cfg = config_from_dict(json.loads(cand.config_json))
    day = _read_day(lake, cand, cand_cfg, ds, table_version, report_id, say)
    window, quarantine = day.window, day.quarantine

    state = _score(lake, cfg, cand, base, cand_cfg, day)
    evaluated = int(state.accumulators["candidate"].compute()["requests"])
    summary = summarize(state, cfg.gate.confidence)
    decision = decide(summary, cfg.gate)
    header = {"report_id": report_id, "ds": ds, "candidate": cand.version,
              "baseline": base.version if base else "none (retriever order is the reference)",
              "request_logs table version": table_version, "rows read": window.rows_read,
              "rows quarantined": quarantine.rows_quarantined, "requests evaluated": evaluated,
              "requests excluded (id in the training window)": quarantine.rows_excluded,
              "candidate window": f"{cand.window_start}..{cand.window_end}",
              "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    if day.note:
        header["note"] = day.note
    report_uri = write_report(lake, summary, decision, header, cfg.gate.primary_metric)
    result = ReplayResult(
        report_id=report_id, ds=ds, candidate=cand.version, baseline=base.version if base else None,
        decision=decision.label, reasons=decision.reasons, summary=summary, report_uri=report_uri,
        table_version=table_version, rows_read=window.rows_read,
        rows_quarantined=quarantine.rows_quarantined, requests_evaluated=evaluated,
        requests_excluded=quarantine.rows_excluded, note=day.note)
    _append_report_row(lake, result, decision)
    if promote:
        if before_commit is not None:
            before_commit()
        result.registry_action = apply_decision(registry, cand, decision, report_id, production)
    result.seconds = time.monotonic() - started
    return result


def _score(lake: Lake, cfg: JobConfig, cand: ModelVersion, base: ModelVersion | None, cand_cfg: JobConfig,
           day: "_Day") -> ReplayState:
    """Every arm's sums over the day's evaluated requests (none when there is nothing to
    evaluate); raises unless they are exactly the kept requests less the excluded ones."""
    metrics = tuple(dict.fromkeys((cfg.gate.primary_metric, *cfg.gate.guardrails)))
    checkpoints = {"candidate": cand.checkpoint_uri}
    if base is not None:
        checkpoints["baseline"] = base.checkpoint_uri
    spec = ReplaySpec(checkpoints=checkpoints, metrics=metrics, replicates=cfg.gate.bootstrap_replicates)
    quarantine = day.quarantine
    if day.note:  # nothing to evaluate: the gate rejects on min_requests
        return ReplayState(spec)
    state = score_day(day.window.validated(cand_cfg.data, quarantine.duplicate_ids, exclude_ids=day.seen),
                      spec, lake, cfg)
    evaluated = int(state.accumulators["candidate"].compute()["requests"])
    if evaluated != quarantine.rows_kept - quarantine.rows_excluded:
        raise RuntimeError(f"scored {evaluated:,} requests but {quarantine.rows_kept:,} rows were kept and "
                           f"{quarantine.rows_excluded:,} excluded: the counts must add up")
    return state


@dataclass
class _Day:
    """The held-out day, read and validated."""

    window: Window
    quarantine: QuarantineReport
    seen: np.ndarray | None
    """hashes of the day's request ids that are in the candidate's training window"""
    note: str | None
    """why nothing is evaluated ("no requests ..."), else None"""


def _read_day(lake: Lake, cand: ModelVersion, cand_cfg: JobConfig, ds: str, table_version: int,
              report_id: str, say) -> _Day:
    """Day ``ds`` at the pinned version, validated with the candidate's data config (bad rows to
    quarantine), its ids checked against the candidate's training window (those excluded)."""
    window = Window.open(lake, ds, ds, version=table_version)
    seen = trained_ids(lake, cand, window, say)
    quarantine = window.quarantine(report_id, cand_cfg.data, exclude_ids=seen)
    say(f"[replay] {window.rows_read:,} rows read, {quarantine.rows_kept:,} kept, "
        f"{quarantine.rows_quarantined:,} quarantined {quarantine.reasons or ''}")
    if quarantine.rows_excluded:
        say(f"[replay] {quarantine.rows_excluded:,} kept request(s) have a request_id that is in "
            f"{cand.version}'s training window {cand.window_start}..{cand.window_end}: not evaluated")
    note = None
    if window.rows_read == 0:
        note = "no requests: the day landed empty"
    elif quarantine.rows_kept == 0:
        note = "no requests: every row was quarantined"
    elif quarantine.rows_kept == quarantine.rows_excluded:
        note = "no requests: every kept request is in the candidate's training window"
    if note:
        say(f"[replay] {note} (ds={ds}): nothing to evaluate; the gate rejects on gate.min_requests")
    return _Day(window, quarantine, seen, note)


def trained_ids(lake: Lake, cand: ModelVersion, day: Window, say=print) -> np.ndarray | None:
    """The hashes of the request_ids of ``day`` that are also in ``cand``'s training window:
    evaluating them would score the candidate on requests it was trained on. The window's days
    are read at the day's pinned version, not the candidate's (whose files a ``VACUUM`` may have
    removed since): rows appended to them later count too, which only excludes more. None when
    the window has no partition any more (then said)."""
    from deltalake.exceptions import DeltaError

    if not (cand.window_start and cand.window_end) or cand.table_version is None:
        return None
    try:
        trained = Window.open(lake, cand.window_start, cand.window_end, version=day.version)
    except (DeltaError, OSError, ValueError) as error:
        say(f"[replay] WARNING request ids not checked against {cand.version}'s training window: "
            f"{str(error).splitlines()[0][:160]}")
        return None
    return day.shared_ids(trained)


def apply_decision(registry: Registry, cand: ModelVersion, decision: Decision, report_id: str,
                   production: str | None) -> str:
    """Move the registry: promote (one commit with the retirement) or reject the candidate.

    ``production`` is the production version when the candidate was evaluated: the promotion
    commits only if it still is. If a rollback or another promotion moved production
    meanwhile, nothing changes, the candidate stays a candidate and the action says so: the
    comparison was against a model that no longer serves, so it has to be evaluated again.
    """
    if decision.promote:  # the registry prefixes "promoted by replay report <id>" itself
        try:
            registry.promote(cand.version, reason="every gate check passed", report_id=report_id,
                             expected_production=production)
        except ProductionChangedError as exc:
            warnings.warn(str(exc), stacklevel=2)
            return (f"not applied: production moved from {exc.expected or 'none'} to "
                    f"{exc.current or 'none'} during the evaluation; evaluate again")
        except AlreadyProductionError as exc:  # an operator promoted it while the gate evaluated
            warnings.warn(str(exc), stacklevel=2)
            return f"not applied: {cand.version} is production already ({exc.production.status_reason})"
        return "promoted"
    failed = ", ".join(c.name for c in decision.checks if not c.passed)
    registry.reject(cand.version, reason=f"failed {failed}", report_id=report_id)
    return "rejected"


def has_report(lake: Lake, candidate: str, ds: str) -> bool:
    """Whether ``replay_reports`` holds an evaluation of ``candidate`` on day ``ds``."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(lake.table_uri("replay_reports"), storage_options=lake.storage_options())
    except TableNotFoundError:
        return False
    rows = table.to_pyarrow_table(columns=["candidate_version", "ds"]).to_pylist()
    return {"candidate_version": candidate, "ds": ds} in rows


def _append_report_row(lake: Lake, result: ReplayResult, decision: Decision) -> None:
    from deltalake import write_deltalake

    s = result.summary
    metrics = {"arms": s.metrics, "sanity": s.sanity, "requests_excluded": result.requests_excluded,
               "deltas": {p: {m: d.to_dict() for m, d in by.items()} for p, by in s.deltas.items()}}
    row = {
        "report_id": result.report_id, "created_at": dt.datetime.now(dt.timezone.utc), "ds": result.ds,
        "candidate_version": result.candidate, "baseline_version": result.baseline,
        "requests_evaluated": result.requests_evaluated, "rows_quarantined": result.rows_quarantined,
        "metrics_json": json.dumps(metrics, sort_keys=True, allow_nan=True),
        "decision": decision.label, "reasons": json.dumps(decision.reasons),
        "report_uri": lake.relative(result.report_uri),  # relative to the lake root: a lake moves
    }
    write_deltalake(lake.table_uri("replay_reports"), pa.Table.from_pylist([row], REPLAY_REPORTS.arrow),
                    mode="append", storage_options=lake.storage_options())


def comparison_table(result: ReplayResult) -> str:
    """The short table the job prints: one line per arm, then the differences and the decision."""
    s = result.summary
    names = ("N@6", "H@6", "AUC")
    arms = [a for a in ("candidate", "baseline", "retriever", "oracle")
            if a in s.metrics and s.metrics[a]["requests"] > 0]
    lines = [f"  {'arm':<12}" + "".join(f"{n:>10}" for n in names)]
    for arm in arms:
        lines.append(f"  {arm:<12}" + "".join(f"{s.metrics[arm].get(n, float('nan')):>10.4f}" for n in names))
    for pair, by_metric in s.deltas.items():
        for metric, d in by_metric.items():
            lines.append(f"  {pair} {metric}: {d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}]")
    lines.append(f"  decision: {result.decision.upper()}"
                 + (f" (registry: {result.registry_action})" if result.registry_action else ""))
    lines += [f"    {r}" for r in result.reasons]
    lines.append(f"  report: {result.report_uri}/report.md")
    return "\n".join(lines)
