"""The training progress record changes only through its own methods: a warm start keeps the
model's lifetime and starts the run's counters afresh; the run's step, not the lifetime step,
is what the cadences count."""

from dnr.checkpoints.progress import TrainingProgress


def _trained(steps: int, steps_per_epoch: int) -> TrainingProgress:
    progress = TrainingProgress(run_name="day-1", seed=7)
    progress.start_attempt(workers=2, skip=0)
    for step in range(steps):
        progress.advance("heuristic" if step < 3 else "adversarial")
        if progress.step_in_epoch == steps_per_epoch:
            progress.end_epoch(requests=64)
    return progress


def test_a_warm_start_keeps_the_lifetime_and_starts_the_run_afresh():
    parent = _trained(steps=8, steps_per_epoch=4)
    parent.record_validation(0.3, candidate=True, min_delta=0.0, patience=2)
    parent.complete(epochs=2, window_start="2026-01-01", window_end="2026-01-02", steps=8)
    child = parent.warm_start("day-2", seed=9)
    assert (child.global_step, child.requests_seen, child.watermark, child.phase) == (8, 128, "2026-01-02",
                                                                                     "adversarial")
    assert child.history == parent.history and child.switch_step == parent.switch_step
    assert (child.run_name, child.seed, child.epoch, child.step_in_epoch, child.run_step(4)) == ("day-2", 9, 0, 0, 0)
    assert (child.valid_curve, child.valid_best, child.stopped_early) == ([], None, False)
    assert parent.valid_curve == [[8, 0.3]]  # the parent's record is not changed by its child
    child.advance("adversarial")
    assert (child.global_step, child.run_step(4)) == (9, 1)


def test_epochs_count_requests_and_the_run_step_survives_a_resume():
    progress = _trained(steps=6, steps_per_epoch=4)
    progress.count_requests(32)  # a checkpoint in the second epoch
    assert (progress.epoch, progress.step_in_epoch, progress.run_step(4), progress.requests_in_epoch) == (1, 2, 6, 32)
    restored = TrainingProgress.from_json(progress.to_json())
    restored.resume()
    assert restored.run_step(4) == 6 and restored.restarts == 1
    assert restored.end_epoch(requests=30) == 62 and restored.requests_seen == 64 + 62


def test_validation_improves_by_more_than_min_delta_and_stops_after_patience():
    progress = TrainingProgress()
    assert not progress.record_validation(0.50, candidate=False, min_delta=0.01, patience=2)  # the start
    assert progress.record_validation(0.40, candidate=True, min_delta=0.01, patience=2)
    progress.advance("heuristic")
    assert not progress.record_validation(0.405, candidate=True, min_delta=0.01, patience=2)  # within min_delta
    assert not progress.stopped_early and progress.valid_since_best == 1
    progress.advance("heuristic")
    assert not progress.record_validation(float("nan"), candidate=True, min_delta=0.01, patience=2)
    assert progress.stopped_early and (progress.valid_best, progress.valid_best_step) == (0.40, 0)


def test_the_switch_step_is_fixed_once_unless_set_explicitly():
    progress = TrainingProgress()
    assert progress.fix_switch_step(explicit=-1, first_run=120) == 120
    assert progress.fix_switch_step(explicit=-1, first_run=30) == 120  # a later, smaller run keeps it
    assert progress.fix_switch_step(explicit=5, first_run=30) == 5
