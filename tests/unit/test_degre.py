"""DeGRe: the evaluator's prefix targets, beam search against exhaustive search, greedy decoding,
dense targets, the training step, checkpoints and the served forward (export included)."""

from __future__ import annotations

import copy
import dataclasses
import itertools

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from dnr.config import RERANKER_FAMILIES, DeGReConfig, DNRConfig, ModelConfig, OptimConfig
from dnr.data.batch import RerankBatch
from dnr.losses import cumulative_regression, soft_target_kl
from dnr.models import PAD_LOGIT, RERANKERS, DeGReGenerator, LookaheadEvaluator, build_reranker
from dnr.models.degre_search import (beam_search, clicks_first_order, evaluator_ranking, logged_order,
                                     prefix_utility, shuffled_logged_order, soft_targets, step_increments)
from dnr.training import checkpoint as ckpt
from dnr.training.step import FAMILIES, build_train_parts, train_step, training_phase
from tests.unit.rerank_helpers import TINY_DATA, make_batch, one_thread, tiny_model  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

DEGRE = DeGReConfig(list_len=3, beam_width=3, evaluator_d_model=16, evaluator_heads=2)
DNR = DNRConfig()
OPTIM = OptimConfig(lr=3e-3)


def degre_model(score_mode: str = "denoise") -> ModelConfig:
    return dataclasses.replace(tiny_model(score_mode), family="degre")


def randomised(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random (zero-initialised heads included), so all inputs reach the output."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.5)
    return module.eval()


def hand_made_batch() -> RerankBatch:
    """One request, candidates a..e in retriever order, c not exposed; one request of 2 candidates."""
    labels = torch.tensor([[0.0, 1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    label_mask = mask.clone()
    label_mask[0, 2] = False
    return RerankBatch(
        item_ids=torch.tensor([[3, 25, 7, 40, 11], [5, 9, 0, 0, 0]]),
        scores=torch.tensor([[0.9, 0.7, 0.5, 0.3, 0.1], [0.6, 0.2, 0.0, 0.0, 0.0]]),
        labels=labels * label_mask, mask=mask, label_mask=label_mask,
        history_ids=torch.tensor([[1, 2], [0, 0]]), history_mask=torch.tensor([[True, True], [False, False]]),
    )


def test_registries_cover_every_family():
    assert set(RERANKERS) == set(FAMILIES) == set(RERANKER_FAMILIES)
    assert isinstance(build_reranker(degre_model(), TINY_DATA), DeGReGenerator)
    assert training_phase(degre_model(), DNR, 10_000) == "distill"


def test_evaluator_prefix_targets_on_a_hand_made_list():
    batch = hand_made_batch()
    order = logged_order(batch)
    # the logged list is the labelled candidates in retriever order: a, b, d, e (c was not shown)
    assert order.index.tolist() == [[0, 1, 3, 4, -1], [0, 1, -1, -1, -1]]
    assert order.valid.tolist() == [[True] * 4 + [False], [True, True, False, False, False]]
    utility = prefix_utility(batch, order)
    assert utility.tolist() == [[0.0, 1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0, 1.0]]
    assert clicks_first_order(batch).index.tolist() == [[1, 4, 0, 3, -1], [0, 1, -1, -1, -1]]
    # the regression is zero at the logged clicks and averages (V_t - Y_t)^2 / t over the 6 real prefixes
    exact = batch.labels.gather(1, order.index.clamp_min(0))
    assert cumulative_regression(exact, utility, order.valid) == 0.0
    half = torch.full_like(exact, 0.5)  # V = 0.5, 1, 1.5, 2 and 0.5, 1
    expected = ((0.5**2 / 1 + 0 + 0.5**2 / 3 + 0) + (0.5**2 / 1 + 0)) / 6
    assert cumulative_regression(half, utility, order.valid).item() == pytest.approx(expected)


def test_the_evaluator_trains_on_shuffled_logged_lists():
    batch = make_batch(num_requests=6)
    torch.manual_seed(0)
    orders = [shuffled_logged_order(batch) for _ in range(2)]
    for order in orders:
        assert torch.equal(order.valid, logged_order(batch).valid)
        for row in range(batch.num_requests):
            items = order.index[row][order.valid[row]].tolist()
            assert sorted(items) == batch.label_mask[row].nonzero().flatten().tolist()  # the labelled ones
    assert not torch.equal(orders[0].index, orders[1].index)  # a fresh order each time


def test_evaluator_forward_matches_its_step_wise_increments():
    """Training (all prefixes at once) and mining (one step at a time) compute the same values."""
    evaluator = randomised(LookaheadEvaluator(tiny_model(), DEGRE, TINY_DATA))
    batch = make_batch(num_requests=6)
    order = logged_order(batch)
    with torch.no_grad():
        parallel = torch.sigmoid(evaluator(batch, order.index, order.valid))
        gain, _ = step_increments(evaluator, batch, order.index)
    stepwise = gain.gather(2, order.index.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(parallel[order.valid], stepwise[order.valid], atol=1e-5, rtol=0)


def test_beam_search_finds_the_exhaustive_optimum():
    batch = hand_made_batch()
    evaluator = randomised(LookaheadEvaluator(tiny_model(), DEGRE, TINY_DATA), seed=3)
    steps = 3
    # width 60 >= every partial list of 5 candidates (5, 20, 60): the search is exhaustive
    beams = beam_search(evaluator, batch, beam_width=60, steps=steps)
    lists = torch.tensor(list(itertools.permutations(range(5), steps)))  # [60, 3]
    one = RerankBatch(**{f.name: getattr(batch, f.name)[:1].expand(len(lists), -1)
                         for f in dataclasses.fields(batch) if getattr(batch, f.name) is not None})
    with torch.no_grad():
        values = torch.sigmoid(evaluator(one, lists, torch.ones_like(lists, dtype=torch.bool))).sum(dim=1)
    best = values.argmax()
    assert beams.sequences[0, 0].tolist() == lists[best].tolist()
    assert beams.values[0, 0].item() == pytest.approx(values[best].item(), abs=1e-5)
    assert (beams.values[0, :-1] >= beams.values[0, 1:]).all()  # best first
    # the 2-candidate request: both orders exist, the third step places nothing
    assert sorted(beams.sequences[1, :2, :2].tolist()) == [[0, 1], [1, 0]]
    assert (beams.sequences[1, :2, 2] == -1).all()
    assert torch.isinf(beams.values[1, 2:]).all()  # no third distinct list
    # a narrow beam never beats the exhaustive one, and width 1 is greedy
    narrow = beam_search(evaluator, batch, beam_width=1, steps=steps)
    assert narrow.values[0, 0] <= beams.values[0, 0] + 1e-6


def test_dense_targets_sum_to_one_per_step():
    evaluator = randomised(LookaheadEvaluator(tiny_model(), DEGRE, TINY_DATA))
    batch = hand_made_batch()
    best = beam_search(evaluator, batch, DEGRE.beam_width, DEGRE.list_len).sequences[:, 0]
    gain, open_ = step_increments(evaluator, batch, best)
    targets = soft_targets(gain, open_, DEGRE.temperature)
    assert targets.shape == (2, DEGRE.list_len, 5)
    sums = targets.sum(dim=-1)
    torch.testing.assert_close(sums[0], torch.ones(3))
    torch.testing.assert_close(sums[1], torch.tensor([1.0, 1.0, 0.0]))  # 2 candidates, no third step
    assert (targets[~open_] == 0).all()  # placed items and padding get no mass
    assert (targets[:, 1:].gather(2, best[:, :1].clamp_min(0).unsqueeze(1).expand(-1, 2, -1)) == 0).all()
    # lower temperature, sharper targets, same argmax
    sharp = soft_targets(gain, open_, DEGRE.temperature / 10)
    assert (sharp.amax(-1)[0] >= targets.amax(-1)[0]).all()
    assert torch.equal(sharp[0].argmax(-1), targets[0].argmax(-1))


def _assert_valid_ranking(scores: torch.Tensor, batch: RerankBatch, k: int) -> None:
    assert scores.shape == batch.mask.shape
    assert torch.isfinite(scores).all()
    assert (scores[~batch.mask] == PAD_LOGIT).all() and (scores[batch.mask] > PAD_LOGIT / 2).all()
    for row in range(batch.num_requests):
        real = int(batch.mask[row].sum())
        order = scores[row].argsort(descending=True)
        assert set(order[:real].tolist()) == set(batch.mask[row].nonzero().flatten().tolist())
        top = order[: min(k, real)]
        assert len(set(top.tolist())) == len(top)  # no repeats
        assert len(set(scores[row, batch.mask[row]].tolist())) == real  # a strict order of the real ones


@pytest.mark.parametrize("score_mode", ["denoise", "none"])
def test_greedy_decoding_is_a_permutation_of_valid_candidates(score_mode):
    generator = randomised(DeGReGenerator(tiny_model(score_mode), TINY_DATA, decode_len=4))
    batch = make_batch()
    batch.mask[6, 2:] = False  # fewer real candidates than K
    batch.mask[7] = False  # none at all
    with torch.no_grad():
        scores = generator(batch)
    _assert_valid_ranking(scores, batch, 4)
    # the decoded list is what the teacher-forced logits choose step by step
    sequence = scores.topk(4, dim=1).indices
    sequence = torch.where(torch.arange(4) < batch.mask.sum(1, keepdim=True), sequence, -1)
    with torch.no_grad():
        logits = generator(batch, sequence)
    placed = torch.zeros_like(batch.mask)
    for t in range(4):
        choice = logits[:, t].masked_fill(~batch.mask | placed, -1e9).argmax(dim=1)
        has = sequence[:, t] >= 0
        assert torch.equal(choice[has], sequence[has, t])
        placed |= torch.nn.functional.one_hot(sequence[:, t].clamp_min(0), batch.list_len).bool() & has[:, None]


def test_untrained_generator_decodes_the_retriever_order():
    """Zero-initialised head + denoise: the floor is the retriever's ranking."""
    batch = make_batch()
    with torch.no_grad():
        scores = DeGReGenerator(tiny_model(), TINY_DATA, decode_len=3).eval()(batch)
    top = scores.topk(3, dim=1).indices
    assert torch.equal(top, batch.scores.masked_fill(~batch.mask, -1).topk(3, dim=1).indices)


def test_evaluator_ranking_is_a_valid_ranking():
    evaluator = randomised(LookaheadEvaluator(tiny_model(), DEGRE, TINY_DATA))
    batch = make_batch()
    _assert_valid_ranking(evaluator_ranking(evaluator, batch, steps=3, beam_width=2), batch, 3)


@pytest.mark.parametrize("dense", [True, False])
def test_degre_step_lowers_the_distillation_loss(dense):
    degre = dataclasses.replace(DEGRE, dense=dense)
    torch.manual_seed(0)
    parts = build_train_parts(degre_model(), TINY_DATA, DNR, OPTIM, degre)
    assert isinstance(parts.reranker, DeGReGenerator) and parts.generator is None
    batch = make_batch(num_requests=16)
    evaluator = copy.deepcopy(parts.evaluator.state_dict())
    history = [train_step(batch, parts, step, degre_model(), DNR, OPTIM, degre) for step in range(30)]
    keys = {"train/loss_distill", "train/loss_theta"}
    dense_keys = {"train/loss_beam", "train/mined_value", "train/loss_cumulative", "train/loss_increment",
                  "train/loss_eval"}
    assert set(history[0]) == keys | (dense_keys if dense else set())
    first, last = history[:3], history[-3:]

    def mean(rows, key):
        return sum(r[key] for r in rows) / len(rows)

    assert mean(last, "train/loss_distill") < 0.8 * mean(first, "train/loss_distill")
    trained = not all(torch.equal(v, evaluator[k]) for k, v in parts.evaluator.state_dict().items())
    assert trained == dense  # the ablation does not train the evaluator it never asks
    if dense:
        assert mean(last, "train/loss_eval") < mean(first, "train/loss_eval")
        expected = history[-1]["train/loss_cumulative"] + degre.increment_weight * history[-1]["train/loss_increment"]
        assert history[-1]["train/loss_eval"] == pytest.approx(expected)
        expected = history[-1]["train/loss_distill"] + degre.beam_weight * history[-1]["train/loss_beam"]
        assert history[-1]["train/loss_theta"] == pytest.approx(expected)


def test_each_degre_update_changes_only_its_model():
    from dnr.training.recipes.degre import distill_update, evaluator_update

    torch.manual_seed(0)
    parts = build_train_parts(degre_model(), TINY_DATA, DNR, OPTIM, DEGRE)
    batch = make_batch()
    generator, evaluator = copy.deepcopy(parts.reranker.state_dict()), copy.deepcopy(parts.evaluator.state_dict())
    evaluator_update(batch, parts, DEGRE, OPTIM)
    assert all(torch.equal(v, generator[k]) for k, v in parts.reranker.state_dict().items())
    assert all(p.grad is None for p in parts.reranker.parameters())
    evaluator = copy.deepcopy(parts.evaluator.state_dict())
    parts.evaluator.zero_grad(set_to_none=True)
    distill_update(batch, parts, DEGRE, OPTIM)
    assert all(torch.equal(v, evaluator[k]) for k, v in parts.evaluator.state_dict().items())
    assert all(p.grad is None for p in parts.evaluator.parameters())
    assert parts.evaluator.training  # mining switched it to eval mode and back


def test_soft_target_kl_is_zero_at_the_target_and_skips_empty_steps():
    logits = torch.tensor([[[0.0, 1.0, 2.0], [5.0, 0.0, 0.0]]])
    allowed = torch.tensor([[[True, True, True], [False, False, False]]])
    targets = torch.zeros(1, 2, 3)
    targets[0, 0] = logits[0, 0].softmax(-1)
    assert soft_target_kl(logits, targets, allowed).item() == pytest.approx(0.0, abs=1e-6)
    one_hot = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]])
    assert soft_target_kl(logits, one_hot, allowed).item() == pytest.approx(
        -logits[0, 0].log_softmax(-1)[2].item())


def test_checkpoint_round_trip_of_the_degre_parts(tmp_path):
    torch.manual_seed(0)
    parts = build_train_parts(degre_model(), TINY_DATA, DNR, OPTIM, DEGRE)
    for step in range(2):
        train_step(make_batch(), parts, step, degre_model(), DNR, OPTIM, DEGRE)
    ckpt.save(tmp_path, parts, ckpt.TrainingProgress(global_step=2, phase="distill"), "{}", {})
    loaded = ckpt.load(tmp_path)
    assert {"reranker", "reranker_opt", "evaluator", "evaluator_opt"} <= loaded.parts

    torch.manual_seed(1)
    fresh = build_train_parts(degre_model(), TINY_DATA, DNR, OPTIM, DEGRE)
    ckpt.restore(fresh, loaded)
    for a, b in ((parts.reranker, fresh.reranker), (parts.evaluator, fresh.evaluator)):
        assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert fresh.evaluator_opt.dense.state_dict()["state"].keys() == parts.evaluator_opt.dense.state_dict()["state"].keys()
    assert fresh.evaluator_opt.embedding.state_dict()["state"].keys() == parts.evaluator_opt.embedding.state_dict()["state"].keys()
    # the restored parts keep training exactly like the originals
    torch.manual_seed(5)
    a = train_step(make_batch(seed=1), parts, 2, degre_model(), DNR, OPTIM, DEGRE)
    torch.manual_seed(5)
    b = train_step(make_batch(seed=1), fresh, 2, degre_model(), DNR, OPTIM, DEGRE)
    assert a == pytest.approx(b, abs=1e-6)
    # serving builds the generator with the default K and gets the checkpoint's K from its state
    served = build_reranker(degre_model(), TINY_DATA)
    assert served.decode_len == DeGReConfig().list_len != DEGRE.list_len
    state = {"reranker": served.state_dict()}
    ckpt.load_tensors(tmp_path, state)
    served.load_state_dict(state["reranker"])
    assert served.decode_len == DEGRE.list_len


def test_degre_step_runs_on_ddp_wrapped_models(tmp_path):
    """World size 1 still builds DDP reducers: a missed reduction or a stray gradient would raise."""
    assert not dist.is_initialized()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        parts = build_train_parts(degre_model(), TINY_DATA, DNR, OPTIM, DEGRE)
        parts.reranker = DistributedDataParallel(parts.reranker)
        parts.evaluator = DistributedDataParallel(parts.evaluator)
        for step in range(2):
            terms = train_step(make_batch(), parts, step, degre_model(), DNR, OPTIM, DEGRE)
        assert all(torch.isfinite(torch.tensor(list(terms.values()))))
    finally:
        dist.destroy_process_group()


def test_served_generator_exports_with_a_dynamic_batch():
    from torch.export import Dim, export

    generator = randomised(DeGReGenerator(tiny_model(), TINY_DATA, decode_len=3))

    class Served(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, item_ids, scores, mask, history_ids, history_mask):
            zeros = torch.zeros_like(scores)
            return self.model(RerankBatch(item_ids, scores, zeros, mask, mask, history_ids, history_mask))

    batch = make_batch()
    args = (batch.item_ids, batch.scores, batch.mask, batch.history_ids, batch.history_mask)
    program = export(Served(generator), args, dynamic_shapes=({0: Dim("B", min=1, max=4096)},) * 5)
    smaller = tuple(a[:5] for a in args)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(*smaller), Served(generator)(*smaller))


def test_quality_bench_degre_rows_share_a_run_and_report_their_cost():
    from bench.quality import (PRESETS, ROW_BY_NAME, SyntheticData, markdown, run_benchmark, synthetic_table,
                               time_split)
    from dnr.config import DataConfig

    cfg = dataclasses.replace(
        PRESETS["synthetic"], data=DataConfig(max_list_len=50, history_len=10, num_buckets=1024, batch_size=32),
        model=tiny_model(), degre=dataclasses.replace(DEGRE, list_len=6), steps=4)
    split = time_split(synthetic_table(SyntheticData(num_items=2_000, train_days=1, requests_per_day=128,
                                                     test_requests=128)), eval_days=1, valid=False)
    names = ("retriever order", "DeGRe evaluator greedy", "DeGRe generator", "DeGRe generator w/o dense")
    results = run_benchmark(split, [ROW_BY_NAME[n] for n in names], seeds=[0], cfg=cfg, log=lambda line: None)
    cost = {row: results.cost[row][0] for row in names[1:]}
    # the evaluator row reuses the generator row's training run: same measured step time
    assert cost["DeGRe evaluator greedy"]["train_ms_per_step"] == cost["DeGRe generator"]["train_ms_per_step"]
    assert cost["DeGRe generator"]["mining_ms_per_request"] > 0
    assert "mining_ms_per_request" not in cost["DeGRe generator w/o dense"]
    text = markdown(results, "### tiny")
    assert "| DeGRe generator − retriever order |" in text and "| row | train ms/step |" in text
