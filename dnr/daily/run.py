"""The daily incremental run, as the driver sees it.

For day D: the parent is the production model, else the newest candidate, else the newest
version rejected on quality alone, else none (cold start; :meth:`Registry.parent_for`). The
window is every partition after the parent's watermark up to D-1, at most the newest
``train.max_window_days`` of them, read at the table version pinned now. Row validation and
quarantine run first, then a ``TorchTrainer`` trains the parent's models further on the kept
rows, and a ``candidate`` row is registered once the run is complete: its final checkpoint, or
with ``validation.fraction`` the checkpoint that scored best on the run's hold-out
(:mod:`dnr.training.validation`). Day D itself is held out: the run ends with its replay evaluation
against the production model and the retriever order, and the gate's decision is applied to the
registry when ``gate.auto_promote`` (:mod:`dnr.evaluation.replay`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from dnr.config import JobConfig, config_to_json
from dnr.daily.placement import check_schedulable, fit_interruptibly, ingest_config, scaling_config
from dnr.daily.plan import cap_window, check_trained, full_steps_per_epoch, plan_window, steps_per_epoch
from dnr.daily.progress import TrainProgress
from dnr.daily.register import prune_run_checkpoints, registered_checkpoint
from dnr.data.late import LateData, find_late_data
from dnr.data.window import QuarantineReport, Window, parse_ds, table_partitions
from dnr.registry import ModelVersion, Registry
from dnr.storage import Lake
from dnr.training.validation import SCORE_KEY, VALID_DATASET
from dnr.training.worker_spec import Lineage, WorkerSpec


@dataclass
class DailyResult:
    """What the job prints and returns."""

    status: str
    """trained | skipped (an equivalent version exists) | up_to_date (no new partition) |
    no_requests (the window's days landed empty); planned while the run is under way."""
    ds: str
    version: str | None = None
    parent_version: str | None = None
    window: tuple[str, str] | None = None
    table_version: int | None = None
    rows_read: int = 0
    rows_quarantined: int = 0
    rows_holdout: int = 0  # kept rows held out for validation: read = trained + held out + quarantined
    rows_late: int = 0
    """rows of ``rows_read`` that landed late in days the parent had trained on (:mod:`dnr.data.late`)"""
    late_data: str | None = None
    """the late rows trained and the rewritten days reported, as printed; None when neither"""
    quarantine_reasons: dict | None = None
    global_step: int = 0
    metrics: dict | None = None
    seconds: float = 0.0
    checkpoint_uri: str | None = None
    tensorboard_uri: str | None = None
    run_name: str | None = None
    replay_decision: str | None = None
    """promote | reject from the replay evaluation of day ``ds``; None when it did not run."""
    replay_report_uri: str | None = None
    registry_action: str | None = None
    """promoted | rejected when gate.auto_promote applied the decision."""
    replay_note: str | None = None
    """Why the replay evaluation did not run, when it did not."""
    capped: str | None = None  # set when train.max_steps stopped the epochs short of the window
    phases: dict | None = None
    """Wall seconds by phase: scan (open, duplicates, validation, quarantine), train (the fit,
    of which checkpoint: writing them), register, replay."""
    window_capped: str | None = None  # set when train.max_window_days cut the window's oldest days
    requests_left_out: int = 0
    """Kept requests not trained in each epoch: the equal split across W workers drops up to W - 1."""


def run_daily(lake: Lake, cfg: JobConfig, ds: str | None = None, force: bool = False,
              verbose: bool = True) -> DailyResult:
    """Train the next version for day ``ds`` (default: the newest partition). Needs a Ray.

    Holds the lake lease ``train_daily/<model_name>`` throughout: a second run on the same lake
    and model line (an overlapping schedule, a manual re-run) fails fast with ``LeaseHeld``
    naming the holder; a crashed run's lease expires after ``train.lease_ttl_s``.
    """
    from dnr.lease import LakeLease

    with LakeLease.daily(lake, cfg.train.model_name, cfg.train.lease_ttl_s,
                         owner=f"run_daily ds={ds or 'newest'}") as lease:
        return _run_daily(lake, cfg, ds, force, verbose, lease)


@dataclass
class _Day:
    """What the phases of one daily run share."""

    lake: Lake
    cfg: JobConfig
    result: DailyResult
    parent: ModelVersion | None
    partitions: list[str]
    say: Callable[..., None]
    lease: object
    run_name: str = ""
    late: LateData | None = None

    @contextlib.contextmanager
    def phase(self, name: str):
        started = time.monotonic()
        try:
            yield
        finally:
            self.result.phases = {**(self.result.phases or {}), name: time.monotonic() - started}


def _run_daily(lake: Lake, cfg: JobConfig, ds: str | None, force: bool, verbose: bool,
               lease) -> DailyResult:
    """The phases: plan, scan (validate and quarantine), train, register, replay."""
    started = time.monotonic()
    say = print if verbose else (lambda *a, **k: None)
    check_schedulable(cfg, say)
    day = _plan(lake, cfg, ds, force, say, lease)
    if day.result.status != "planned":
        return day.result
    with day.phase("scan"):
        data, report, steps = _scan(day)
    if report.rows_read == 0:
        return day.result
    with day.phase("train"):
        checkpoint_uri, metrics = _train(day, data, report, steps, verbose)
    with day.phase("register"):
        _register_version(day, report, checkpoint_uri, metrics)
    with day.phase("replay"):
        _replay(lake, cfg, day.result, day.partitions, day.say, lease)
    day.result.seconds = time.monotonic() - started
    return day.result


def _plan(lake: Lake, cfg: JobConfig, ds: str | None, force: bool, say, lease) -> _Day:
    """The parent and the window of day ``ds``; a result with a final status when there is
    nothing to train (up to date, or an equivalent version exists, evaluated here if it never was)."""
    table_version, partitions = table_partitions(lake)
    if not partitions:
        raise ValueError(f"{lake.table_uri('request_logs')} has no partitions")
    ds = parse_ds(ds, "--ds") if ds else partitions[-1]
    registry = Registry(lake)
    parent = registry.parent_for(cfg.train.model_name)
    window = plan_window(partitions, parent, ds)
    result = DailyResult(status="up_to_date", ds=ds, parent_version=parent and parent.version,
                         table_version=table_version)
    if window is not None:
        window, cut = cap_window(partitions, window, cfg.train.max_window_days)
        if cut:
            since = f"the window of {parent.version}" if parent else "the first partition"
            result.window_capped = (
                f"train.max_window_days={cfg.train.max_window_days}: training on {window[0]}.."
                f"{window[1]}; the {len(cut)} older day(s) since {since}, {cut[0]}..{cut[-1]}, "
                "are skipped and no version will train on them")
            say(f"[daily] WARNING {result.window_capped}")
    result.window = window
    day = _Day(lake, cfg, result, parent, partitions, say, lease)
    if window is None:
        say(f"[daily] nothing to train for ds={ds}: no partition after "
            f"{parent.window_end if parent else '-'} and before {ds}")
        if _unevaluated(lake, parent, ds):  # trained for ds; its evaluation failed or never ran
            say(f"[daily] {parent.version} was trained for ds={ds} but never evaluated on it: replaying")
            result.status, result.version = "skipped", parent.version
            result.checkpoint_uri, result.window = parent.checkpoint_uri, (parent.window_start, parent.window_end)
            _replay(lake, cfg, result, partitions, say, lease)
        return day
    same = registry.find_equivalent(cfg.train.model_name, result.parent_version, window[1], table_version)
    if same is not None and not force:
        say(f"[daily] {same.version} was already trained from parent {result.parent_version} on "
            f"{window[0]}..{window[1]} at table version {table_version}; nothing new (use --force)")
        result.status, result.version, result.checkpoint_uri = "skipped", same.version, same.checkpoint_uri
        if same.status == "candidate":  # trained, but the run stopped before its evaluation
            _replay(lake, cfg, result, partitions, say, lease)
        return day
    result.status = "planned"
    _find_late_rows(day, table_version)
    name = cfg.train.model_name
    day.run_name = f"{name}-{ds}" if not force else f"{name}-{ds}-{int(time.time())}"
    return day


def _find_late_rows(day: _Day, table_version: int) -> None:
    """Rows appended since the parent's table version to days it trained on: trained with this
    window; days rewritten since are reported (:mod:`dnr.data.late`)."""
    if day.parent is None:
        return
    day.late = find_late_data(day.lake, day.parent.table_version, day.parent.window_end, table_version)
    day.result.late_data = day.late.describe() or None
    if day.result.late_data:
        day.say(f"[daily] {day.result.late_data}")


def _scan(day: _Day) -> tuple[Window, QuarantineReport, int]:
    """Open the window at the pinned version (with the late files), validate it, quarantine its
    bad rows; the steps per epoch of what was kept. A window of empty days ends the run."""
    result, cfg, say = day.result, day.cfg, day.say
    (start, end), version = result.window, result.table_version
    late = day.late.files if day.late else ()
    data = Window.open(day.lake, start, end, version=version, extra_files=late)
    result.rows_late = day.late.rows if day.late else 0
    say(f"[daily] ds={result.ds} parent={result.parent_version or '(cold start)'} window={start}..{end} "
        f"table v{version}: {len(data.files)} files, {data.rows_read:,} rows"
        + (f" ({result.rows_late:,} late)" if late else "") + f"; run {day.run_name}")
    report = data.quarantine(day.run_name, cfg.data, cfg.validation.fraction)
    if report.rows_read == 0:
        result.status = "no_requests"
        say(f"[daily] no requests in {start}..{end}: its {len(data.files)} file(s) hold no row (the "
            "day(s) landed empty). Nothing was trained or registered; the next run trains from the "
            f"same parent, {result.parent_version or '(cold start)'}, over these days and the new ones")
        return data, report, 0
    held = f" ({report.rows_train:,} to train, {report.rows_holdout:,} held out)" if cfg.validation.fraction else ""
    say(f"[daily] validated: {report.rows_kept:,} kept{held}, {report.rows_quarantined:,} quarantined "
        f"{report.reasons or ''}")
    if report.rows_kept == 0:
        raise ValueError(f"every row of {start}..{end} was quarantined: {report.reasons}")
    if report.rows_train == 0:
        raise ValueError(f"validation.fraction={cfg.validation.fraction} held out all "
                         f"{report.rows_kept:,} kept rows of {start}..{end}: nothing to train on")
    result.rows_read, result.rows_quarantined = report.rows_read, report.rows_quarantined
    result.rows_holdout = report.rows_holdout
    result.quarantine_reasons = report.reasons
    steps, full = steps_per_epoch(report.rows_train, cfg), full_steps_per_epoch(report.rows_train, cfg)
    say(f"[daily] {cfg.train.num_workers} workers x batch {cfg.data.batch_size}: "
        f"{steps} steps per epoch, {cfg.train.epochs} epoch(s)")
    epochs, cap = cfg.train.epochs, cfg.train.max_steps
    if steps < full:  # the version still covers the whole window: the next run starts after it
        result.capped = (f"train.max_steps={cap} cut each epoch to {steps} of {full} "
                         f"steps: about {steps / full:.0%} of the window was trained on (a smoke run)")
    elif cap and full * epochs > cap:  # the cap is on the run's steps, over all its epochs
        result.capped = f"train.max_steps={cap} cut the run to {cap} of {full * epochs} steps (a smoke run)"
    if result.capped:
        say(f"[daily] WARNING {result.capped}")
    return data, report, steps


def _train(day: _Day, data: Window, report: QuarantineReport, steps: int,
           verbose: bool) -> tuple[str, dict]:
    """Ray Train on the kept rows: (the final checkpoint's URI, the run's numeric metrics)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer

    from dnr.training.loop import train_loop_per_worker

    lake, cfg, result = day.lake, day.cfg, day.result
    validating = cfg.validation.fraction > 0
    lineage = Lineage(parent_version=result.parent_version, window_start=result.window[0],
                      window_end=result.window[1], table_version=result.table_version,
                      rows_read=report.rows_read, rows_quarantined=report.rows_quarantined)
    total = min(steps * cfg.train.epochs, cfg.train.max_steps or steps * cfg.train.epochs)
    with (TrainProgress(total) if verbose else contextlib.nullcontext()) as bar:
        spec = WorkerSpec(config=cfg, lake_root=lake.root, run_name=day.run_name, lineage=lineage,
                          parent_checkpoint=day.parent.checkpoint_uri if day.parent else None,
                          steps_per_epoch=steps, progress_board=bar.board if bar else None)
        fit = fit_interruptibly(TorchTrainer(
            train_loop_per_worker,
            train_loop_config=spec.loop_config(),
            scaling_config=scaling_config(cfg),
            run_config=RunConfig(
                name=day.run_name, storage_path=lake.fs_path(lake.uri("checkpoints")) if lake.is_s3
                else lake.uri("checkpoints"),
                storage_filesystem=lake.filesystem() if lake.is_s3 else None,
                # worker failures: train.max_failures; a worker group that cannot be started
                # (each try waits RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S) fails the run after 3
                failure_config=FailureConfig(max_failures=cfg.train.max_failures,
                                             controller_failure_limit=3),
                # with validation: the 2 best by their own validation score, and the latest
                checkpoint_config=CheckpointConfig(
                    num_to_keep=2, checkpoint_score_attribute=SCORE_KEY if validating else None),
            ),
            datasets=_datasets(data, cfg, report),
            dataset_config=ingest_config(cfg),
        ))
    if fit.checkpoint is None:
        raise RuntimeError(f"run {day.run_name} finished without a checkpoint: {fit.error}")
    checkpoint, metrics = registered_checkpoint(fit, validating)
    _account(day, metrics, report.rows_train, steps)
    return ("s3://" + checkpoint.path) if lake.is_s3 else checkpoint.path, metrics


def _datasets(data: Window, cfg: JobConfig, report: QuarantineReport) -> dict:
    """The run's Ray Datasets: ``train``, and the validation hold-out when there is one."""
    parts = {"train": "train", VALID_DATASET: "holdout"} if cfg.validation.fraction else {"train": "train"}
    return {name: data.validated(cfg.data, report.duplicate_ids, cfg.validation.fraction, part=part)
            for name, part in parts.items()}


def _account(day: _Day, metrics: dict, kept: int, steps: int) -> None:
    """Add what the run's metrics need beside the loop's: the checkpoint time, and the steps cut
    by ``train.max_steps`` or the requests the workers' equal split left out."""
    result, cfg = day.result, day.cfg
    result.phases["checkpoint"] = float(metrics.get("time/checkpoint_s", 0.0))
    if "valid/registered" in metrics:
        stopped = "validation stopped the run" if metrics.get("train/stopped_early") else "the run ended"
        day.say(f"[daily] {stopped} at step {metrics['train/last_global_step']:.0f}; registering the "
                f"best checkpoint, step {metrics['global_step']:.0f} (validation "
                f"{day.cfg.validation.metric} {metrics['valid/registered']:.4f})")
    if metrics.get("train/stopped_early"):  # the last epoch ended early: its requests were not all seen
        return
    if result.capped:
        metrics.update({"train/steps_per_epoch": steps,
                        "train/steps_per_epoch_uncapped": full_steps_per_epoch(kept, cfg)})
        return
    result.requests_left_out = check_trained(metrics, kept, cfg, day.run_name)
    metrics["train/requests_left_out"] = result.requests_left_out
    if result.requests_left_out:
        day.say(f"[daily] {result.requests_left_out} of {kept:,} kept requests were not trained in "
                f"each epoch: the equal split across {cfg.train.num_workers} workers leaves out up "
                f"to {cfg.train.num_workers - 1}")


def _register_version(day: _Day, report: QuarantineReport, checkpoint_uri: str, metrics: dict) -> None:
    """The ``candidate`` row (only now that the final checkpoint exists), then the run's other
    checkpoint directories deleted."""
    result, cfg = day.result, day.cfg
    row = dict(
        model_name=cfg.train.model_name, family=cfg.model.family, status="candidate",
        checkpoint_uri=checkpoint_uri, config_json=config_to_json(cfg),
        created_at=dt.datetime.now(dt.timezone.utc), parent_version=result.parent_version,
        window_start=result.window[0], window_end=result.window[1],
        table_version=result.table_version, rows_read=report.rows_read,
        rows_quarantined=report.rows_quarantined, rows_late=result.rows_late, global_step=int(metrics.get("global_step", 0)),
        run_name=day.run_name, metrics_json=json.dumps(metrics, sort_keys=True),
    )
    day.lease.check()  # never commit if another run took the lake over meanwhile
    result.version = _register(Registry(day.lake), row)
    pruned = prune_run_checkpoints(day.lake, checkpoint_uri)
    if pruned:
        day.say(f"[daily] deleted {len(pruned)} earlier checkpoint(s) of run {day.run_name}; "
                f"kept {checkpoint_uri}")
    result.status, result.run_name = "trained", day.run_name
    result.global_step, result.metrics = int(metrics.get("global_step", 0)), metrics
    result.checkpoint_uri = checkpoint_uri
    result.tensorboard_uri = day.lake.uri("tensorboard", day.run_name)


def _unevaluated(lake: Lake, parent: ModelVersion | None, ds: str) -> bool:
    """``parent`` is a candidate trained for day ``ds`` (its window ends the day before) that
    has no replay report on ``ds``."""
    from dnr.evaluation.replay import has_report

    if parent is None or parent.status != "candidate" or not parent.window_end:
        return False
    trained_for = (dt.date.fromisoformat(parent.window_end) + dt.timedelta(days=1)).isoformat()
    return trained_for == ds and not has_report(lake, parent.version, ds)


def _replay(lake: Lake, cfg: JobConfig, result: DailyResult, partitions: list[str], say, lease) -> None:
    """The held-out day's replay evaluation of the new version, and the gate (docs/operations.md,
    "Replay evaluation and the gate")."""
    from dnr.evaluation.replay import comparison_table, run_replay

    if not cfg.gate.enabled:
        result.replay_note = "gate.enabled=false"
    elif result.ds not in partitions:
        result.replay_note = f"ds={result.ds} has not landed: run jobs/replay_eval.py when it has"
    if result.replay_note:
        say(f"[daily] replay evaluation skipped: {result.replay_note}")
        return
    replay = run_replay(lake, cfg, candidate=result.version, baseline="production", ds=result.ds,
                        promote=cfg.gate.auto_promote, verbose=True, before_commit=lease.check)
    say("[daily] replay evaluation\n" + comparison_table(replay))
    result.replay_decision, result.replay_report_uri = replay.decision, replay.report_uri
    result.registry_action = replay.registry_action


def _register(registry: Registry, row: dict, attempts: int = 5) -> str:
    """Register under the next free version number; another writer may take a number first."""
    from dnr.registry import VersionExistsError

    attempt = 0
    while True:
        version = registry.next_version(row["model_name"])
        try:
            registry.register(ModelVersion(version=version, **row))
            return version
        except VersionExistsError:
            attempt += 1
            if attempt == attempts:
                raise
