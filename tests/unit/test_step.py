"""The training step: phases, gradient isolation of both half-steps, ablations, a tiny run, DDP."""

from __future__ import annotations

import copy
import gc

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from dnr.config import SCORE_MODES, DNRConfig, OptimConfig
from dnr.training.recipes.prm import generator_phase, generator_update, reranker_update, synthetic_rows
from dnr.training.step import build_train_parts, reranker_context, train_step
from tests.unit.rerank_helpers import TINY_DATA, make_batch, one_thread, tiny_model  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

DNR = DNRConfig(lambda_e=5, generator_hidden=8, noise_dim=4, hist_bins=8)
OPTIM = OptimConfig(lr=3e-3, generator_lr=3e-3)
ALL_KEYS = {"train/loss_direct", "train/loss_z", "train/loss_theta",
            "train/loss_adv", "train/loss_x", "train/loss_phi"}


def _parts(score_mode: str = "denoise", dnr: DNRConfig = DNR, seed: int = 0):
    torch.manual_seed(seed)
    return build_train_parts(tiny_model(score_mode), TINY_DATA, dnr, OPTIM)


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return copy.deepcopy(module.state_dict())


def _changed(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(v, before[k]) for k, v in module.state_dict().items())


NAIVE = DNRConfig(enabled=False)


@pytest.mark.parametrize("score_mode", SCORE_MODES)
def test_baselines_take_the_plain_supervised_step(score_mode):
    parts = _parts(score_mode, NAIVE)
    assert parts.generator is None and parts.heuristic is None
    before = _snapshot(parts.reranker)
    terms = train_step(make_batch(), parts, 10_000, tiny_model(score_mode), NAIVE, OPTIM)
    assert set(terms) == {"train/loss_direct", "train/loss_theta"}
    assert terms["train/loss_direct"] == terms["train/loss_theta"] > 0
    assert _changed(parts.reranker, before)
    assert int(parts.reranker.score_quantiles.num_updates) == 1  # the score sketch learns in every mode


@pytest.mark.parametrize("score_mode", SCORE_MODES)
def test_dnr_layers_on_every_score_mode(score_mode):
    parts = _parts(score_mode)
    assert parts.heuristic is not None and parts.generator is not None
    model = tiny_model(score_mode)
    theta, phi = _snapshot(parts.reranker), _snapshot(parts.generator)
    heuristic = train_step(make_batch(), parts, DNR.lambda_e - 1, model, DNR, OPTIM)
    assert set(heuristic) == {"train/loss_direct", "train/loss_z", "train/loss_theta"}
    assert not _changed(parts.generator, phi)
    adversarial = train_step(make_batch(seed=1), parts, DNR.lambda_e, model, DNR, OPTIM)
    assert set(adversarial) == ALL_KEYS
    assert all(torch.isfinite(torch.tensor(v)) for v in adversarial.values())
    assert _changed(parts.reranker, theta) and _changed(parts.generator, phi)


@pytest.mark.parametrize("score_mode", SCORE_MODES)
def test_dnr_at_lambda_m_zero_without_generator_is_the_naive_step(score_mode):
    """The DNR recipe adds nothing but its objectives: at lambda_m = 0 and before any generator,
    the reranker after each step equals the naive mode's, bit for bit."""
    dnr = DNRConfig(lambda_m=0.0, use_generator=False, lambda_e=0)
    dnr_parts, naive_parts = _parts(score_mode, dnr, seed=3), _parts(score_mode, NAIVE, seed=3)
    model = tiny_model(score_mode)
    for step in range(3):
        batch = make_batch(seed=step)
        torch.manual_seed(step)  # the same dropout masks in both
        dnr_terms = train_step(batch, dnr_parts, step, model, dnr, OPTIM)
        torch.manual_seed(step)
        naive_terms = train_step(batch, naive_parts, step, model, NAIVE, OPTIM)
        assert dnr_terms == naive_terms
    after, expected = dnr_parts.reranker.state_dict(), naive_parts.reranker.state_dict()
    assert after.keys() == expected.keys()
    assert all(torch.equal(after[k], expected[k]) for k in expected)


def test_heuristic_phase_trains_only_the_reranker():
    parts = _parts()
    theta, phi = _snapshot(parts.reranker), _snapshot(parts.generator)
    terms = train_step(make_batch(), parts, DNR.lambda_e - 1, tiny_model(), DNR, OPTIM)
    assert set(terms) == {"train/loss_direct", "train/loss_z", "train/loss_theta"}
    expected = terms["train/loss_direct"] + DNR.lambda_m * terms["train/loss_z"]
    assert terms["train/loss_theta"] == pytest.approx(expected)
    assert _changed(parts.reranker, theta)
    assert not _changed(parts.generator, phi)
    assert all(p.grad is None for p in parts.generator.parameters())
    assert int(parts.reranker.score_quantiles.num_updates) == 1


def test_generator_phase_starts_at_lambda_e_and_reports_every_term():
    parts = _parts()
    phi = _snapshot(parts.generator)
    terms = train_step(make_batch(), parts, DNR.lambda_e, tiny_model(), DNR, OPTIM)
    assert set(terms) == ALL_KEYS
    assert terms["train/loss_adv"] < 0 < terms["train/loss_x"]
    expected = terms["train/loss_adv"] + DNR.lambda_x * terms["train/loss_x"]
    assert terms["train/loss_phi"] == pytest.approx(expected)
    assert _changed(parts.generator, phi)


def test_reranker_half_step_changes_only_theta():
    parts, batch = _parts(), make_batch()
    theta, phi = _snapshot(parts.reranker), _snapshot(parts.generator)
    context = reranker_context(parts.reranker, batch)
    reranker_update(batch, parts, parts.generator, context, DNR, OPTIM)
    assert _changed(parts.reranker, theta)
    assert not _changed(parts.generator, phi)
    assert all(p.grad is None for p in parts.generator.parameters())


def test_generator_half_step_changes_only_phi_and_writes_no_gradient_into_theta():
    parts, batch = _parts(), make_batch()
    theta, phi = _snapshot(parts.reranker), _snapshot(parts.generator)
    context = reranker_context(parts.reranker, batch)
    generator_update(batch, parts, context, DNR, OPTIM)
    assert _changed(parts.generator, phi)
    assert not _changed(parts.reranker, theta)
    assert all(p.grad is None for p in parts.reranker.parameters())
    assert all(p.requires_grad for p in parts.reranker.parameters())  # unfrozen afterwards


def test_heuristic_only_ablation_never_switches():
    dnr = DNRConfig(lambda_e=0, use_generator=False)
    parts = _parts(dnr=dnr)
    assert parts.generator is None and parts.heuristic is not None
    terms = train_step(make_batch(), parts, 10_000, tiny_model(), dnr, OPTIM)
    assert "train/loss_phi" not in terms


@pytest.mark.parametrize("use_adv, use_lx", [(False, True), (True, False)])
def test_objective_ablations_weight_out_their_term(use_adv, use_lx):
    dnr = DNRConfig(lambda_e=0, use_adv=use_adv, use_lx=use_lx, generator_hidden=8, noise_dim=4, hist_bins=8)
    terms = train_step(make_batch(), _parts(dnr=dnr), 0, tiny_model(), dnr, OPTIM)
    expected = use_adv * terms["train/loss_adv"] + use_lx * dnr.lambda_x * terms["train/loss_x"]
    assert terms["train/loss_phi"] == pytest.approx(expected)


def test_tiny_dnr_run_lowers_its_losses():
    dnr = DNRConfig(lambda_e=40, generator_hidden=8, noise_dim=4, hist_bins=8)
    parts, batch = _parts(dnr=dnr), make_batch(num_requests=32)
    history = [train_step(batch, parts, step, tiny_model(), dnr, OPTIM) for step in range(70)]

    def mean(key: str, steps: range) -> float:
        return sum(history[s][key] for s in steps) / len(steps)

    start, switch, end = range(0, 5), range(40, 45), range(65, 70)
    assert mean("train/loss_direct", end) < 0.5 * mean("train/loss_direct", start)
    assert mean("train/loss_z", end) < mean("train/loss_z", start)
    assert mean("train/loss_x", end) < mean("train/loss_x", switch)  # f_phi learns the real distribution
    assert all(torch.isfinite(torch.tensor(list(h.values()))).all() for h in history)


def test_step_runs_unchanged_on_ddp_wrapped_models(tmp_path):
    """World size 1 still builds DDP reducers: a stray gradient or a missed reduction would raise."""
    assert not dist.is_initialized()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    parts = None
    try:
        parts = _parts()
        parts.reranker = DistributedDataParallel(parts.reranker)
        parts.generator = DistributedDataParallel(parts.generator)
        batch = make_batch()
        for step in range(DNR.lambda_e - 1, DNR.lambda_e + 2):
            terms = train_step(batch, parts, step, tiny_model(), DNR, OPTIM)
        assert set(terms) == ALL_KEYS
        assert all(p.grad is not None for p in parts.generator.parameters())
    finally:
        # the DDP reducers go before their process group: freed after it (when the test's frame
        # is), a reducer's destructor can wait on gloo for ever (seen once in a full suite run)
        parts = None
        gc.collect()
        dist.destroy_process_group()



def test_all_rows_as_a_subset_is_the_whole_batch_step():
    """The subset path (``dnr.synthetic_fraction`` < 1) with every row selected computes the same
    losses as the default path: only which requests get a synthetic copy differs."""
    batch = make_batch()
    rows = torch.arange(batch.num_requests)
    terms = []
    for subset in (None, rows):
        parts = _parts()
        context = reranker_context(parts.reranker, batch)
        torch.manual_seed(1)
        half = reranker_update(batch, parts, parts.generator, context, DNR, OPTIM, subset)
        torch.manual_seed(2)
        terms.append(half | generator_update(batch, parts, context, DNR, OPTIM, subset))
    for key in terms[0]:
        torch.testing.assert_close(terms[0][key], terms[1][key], msg=key)


def test_a_synthetic_fraction_copies_that_share_of_the_requests():
    dnr = DNRConfig(lambda_e=0, generator_hidden=8, noise_dim=4, hist_bins=8, synthetic_fraction=0.25)
    parts, batch = _parts(dnr=dnr), make_batch(num_requests=16)
    rows = synthetic_rows(batch, dnr.synthetic_fraction)
    assert rows.shape == (4,) and len(set(rows.tolist())) == 4
    assert synthetic_rows(batch, 1.0) is None
    theta, phi = _snapshot(parts.reranker), _snapshot(parts.generator)
    terms = train_step(batch, parts, 0, tiny_model(), dnr, OPTIM)
    assert set(terms) == ALL_KEYS and all(torch.isfinite(torch.tensor(list(terms.values()))))
    assert _changed(parts.reranker, theta) and _changed(parts.generator, phi)
    with pytest.raises(ValueError, match="dnr.synthetic_fraction"):
        DNRConfig(synthetic_fraction=0.0)


def test_a_resumed_epoch_skips_by_count_when_the_worker_count_changed():
    from dnr.training.checkpoint import TrainingProgress
    from dnr.training.loop import resume_skip

    # 2 workers x batch 64 trained 5 steps = 640 requests of the epoch
    progress = TrainingProgress(step_in_epoch=5, requests_in_epoch=640, num_workers=2)
    assert resume_skip(progress, workers=2, batch_size=64) == 5   # same count: the steps done
    assert resume_skip(progress, workers=1, batch_size=64) == 10  # 2 -> 1: the same 640 requests
    assert resume_skip(progress, workers=4, batch_size=64) == 2   # 2 -> 4: 512 skipped, 128 again
    older = TrainingProgress(step_in_epoch=5, requests_in_epoch=640)  # a record without the count
    assert resume_skip(older, workers=1, batch_size=64) == 5
    fresh = TrainingProgress(num_workers=2)
    assert resume_skip(fresh, workers=1, batch_size=64) == 0


def test_every_loss_key_a_step_returns_is_declared_by_its_family(monkeypatch):
    from dataclasses import replace

    from dnr.training import step as step_module

    family = step_module.FAMILIES["prm"]
    assert ALL_KEYS == set(family.loss_keys)  # the keys the loop all-reduces and logs
    batch, model = make_batch(seed=3), tiny_model("denoise")

    def with_a_new_term(*args):
        return {**family.step(*args), "train/loss_new": torch.tensor(1.0)}

    monkeypatch.setitem(step_module.FAMILIES, "prm", replace(family, step=with_a_new_term))
    with pytest.raises(KeyError, match=r"\['train/loss_new'\].*Family.loss_keys"):
        train_step(batch, _parts(), 0, model, DNR, OPTIM)


def test_the_worker_loop_takes_a_worker_spec_and_nothing_else():
    from dnr.config import JobConfig
    from dnr.training.worker_spec import Lineage, WorkerSpec

    spec = WorkerSpec(config=JobConfig(), lake_root="/tmp/lake", run_name="dnr-2026-01-02",
                      lineage=Lineage(None, "2026-01-01", "2026-01-01", 0, 10, 0))
    assert WorkerSpec.of(spec.loop_config()) is spec
    with pytest.raises(TypeError, match="WorkerSpec.loop_config"):
        WorkerSpec.of({"config": {}, "lake": "/tmp/lake"})  # the old plain dict
    with pytest.raises(AttributeError):
        spec.run_name = "other"  # frozen


def test_match_auc_sets_the_noise_ratio_from_the_real_scores_running_auc():
    """The helper's scores are labels plus noise (a high AUC): the matched lambda_c is the one
    at which Beta noise ranks as well, the same for the heuristic and the learned generator."""
    dnr = DNRConfig(lambda_e=0, match_auc=True, lambda_c=0.77, generator_hidden=8, noise_dim=4, hist_bins=8)
    parts = _parts("add", dnr)
    assert parts.heuristic.lambda_c == 0.77  # before any request: the configured value
    train_step(make_batch(), parts, 0, tiny_model("add"), dnr, OPTIM)
    sketch = parts.reranker.score_quantiles
    assert int(sketch.auc_updates) == 1 and 0.5 < float(sketch.auc) <= 1.0
    expected = parts.heuristic.lambda_c_for_auc(sketch.auc)
    assert float(parts.heuristic.lambda_c) == pytest.approx(float(expected))
    assert float(parts.generator.lambda_c) == pytest.approx(float(expected))


def test_the_switch_is_fixed_in_epochs_by_the_first_run_and_kept_by_warm_starts():
    """dnr.lambda_e_epochs becomes a lifetime step at the cold start; a warm start keeps it even
    when its window (steps per epoch) is smaller; an explicit dnr.lambda_e overrides both."""
    from dnr.config import JobConfig
    from dnr.training.checkpoint import TrainingProgress
    from dnr.training.loop import fix_switch_step
    from dnr.training.worker_spec import Lineage, WorkerSpec

    def spec(steps_per_epoch: int, **dnr) -> WorkerSpec:
        return WorkerSpec(config=JobConfig(dnr=DNRConfig(**dnr)), lake_root="/tmp/lake", run_name="r",
                          lineage=Lineage(None, "2026-01-01", "2026-01-01", 0, 10, 0),
                          steps_per_epoch=steps_per_epoch)

    cold = TrainingProgress()
    first = fix_switch_step(spec(200, lambda_e_epochs=1.5), cold)
    assert cold.switch_step == first.config.dnr.lambda_e == 300
    warm = TrainingProgress(global_step=320, switch_step=cold.switch_step)  # the parent's record
    assert fix_switch_step(spec(40, lambda_e_epochs=1.5), warm).config.dnr.lambda_e == 300
    assert generator_phase(fix_switch_step(spec(40), warm).config.dnr, warm.global_step)
    explicit = fix_switch_step(spec(40, lambda_e=7), TrainingProgress(switch_step=300))
    assert explicit.config.dnr.lambda_e == 7
    with pytest.raises(ValueError, match="unresolved"):
        generator_phase(DNRConfig(), 10)
