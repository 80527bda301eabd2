"""Ranking metrics: hand-computed values, padding invariance, exclusion counts, exact merging."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist

from dnr.metrics import MetricAccumulator, exact_auc, per_request_metrics

T, F = True, False


def hand_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Four requests, L = 5: rows 0-1 ranked, row 2 without positive, row 3 without candidate."""
    scores = torch.tensor(
        [
            [0.1, 0.9, 0.5, 0.7, 0.0],
            [0.3, 0.3, 0.8, 0.2, 5.0],  # column 4: an invalid positive with the top score
            [0.4, 0.6, 0.0, 0.0, 0.0],
            [9.0, 1.0, 0.0, 0.0, 0.0],
        ]
    )
    labels = torch.tensor(
        [
            [1.0, 0.0, 1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0, 1.0, 1.0],
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [1.0, 1.0, 0.0, 0.0, 0.0],
        ]
    )
    valid = torch.tensor(
        [[T, T, T, T, F], [T, T, T, T, F], [T, T, F, F, F], [F, F, F, F, F]]
    )
    return scores, labels, valid


# Rk = 1/log2(k + 1) is the discount of rank k; both ranked rows have P = 2 positives, so for
# K >= 2 the ideal DCG is R1 + R2 = 1 + 0.63093 = 1.63093.
# Row 0: order by score 0.9 (neg), 0.7 (neg), 0.5 (pos), 0.1 (pos): positives at ranks 3, 4.
#   K=2: no hit, every metric 0.
#   K=6 (past the list): h=2, P=2, V=4.
#     N = (R3 + R4) / (R1 + R2) = (0.5 + 0.43068) / 1.63093 = 0.57064
#     M = (1/3 + 2/4) / min(2, 6) = 0.41667
#     F1: precision 2/min(6, 4) = 0.5, recall 2/2 = 1 -> 2 * 0.5 * 1 / 1.5 = 0.66667
#   AUC: positives 0.1, 0.5 are below both negatives 0.9, 0.7 -> 0/4 = 0.
# Row 1: 0.8 (neg), then the 0.3 tie kept in column order: col 0 (pos), col 1 (neg), 0.2 (pos):
#   positives at ranks 2, 4; the invalid column 4 is ignored despite its score 5.0.
#   K=2: h=1. N = R2 / (R1 + R2) = 0.63093 / 1.63093 = 0.38685. M = (1/2) / min(2, 2) = 0.25.
#     F1: precision 1/2, recall 1/2 -> 0.5.
#   K=6: h=2. N = (R2 + R4) / (R1 + R2) = 1.06161 / 1.63093 = 0.65092. M = (1/2 + 2/4) / 2 = 0.5.
#     F1: precision 2/4, recall 2/2 -> 0.66667.
#   AUC pairs (pos, neg): (0.3, 0.3) tie = 1/2, (0.3, 0.8) 0, (0.2, 0.3) 0, (0.2, 0.8) 0 -> 0.125.
R1, R2, R3, R4 = (1.0 / math.log2(rank + 1) for rank in (1, 2, 3, 4))
IDCG2 = R1 + R2
EXPECTED = {
    "H@2": [0.0, 1.0],
    "N@2": [0.0, R2 / IDCG2],
    "M@2": [0.0, 0.25],
    "F1@2": [0.0, 0.5],
    "H@6": [1.0, 1.0],
    "N@6": [(R3 + R4) / IDCG2, (R2 + R4) / IDCG2],
    "M@6": [(1 / 3 + 2 / 4) / 2, (1 / 2 + 2 / 4) / 2],
    "F1@6": [2 * 0.5 * 1.0 / 1.5, 2 * 0.5 * 1.0 / 1.5],
    "AUC": [0.0, 0.125],
}


def assert_same(a: dict[str, float], b: dict[str, float], rel: float = 1e-12) -> None:
    assert a.keys() == b.keys()
    for key in a:
        both_nan = math.isnan(a[key]) and math.isnan(b[key])
        assert both_nan or math.isclose(a[key], b[key], rel_tol=rel, abs_tol=1e-12), key


def random_batch(
    gen: torch.Generator, requests: int, list_len: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded batch with empty lists, unlabelled candidates, and tied scores (half-unit grid)."""
    lengths = torch.randint(0, list_len + 1, (requests,), generator=gen)
    mask = torch.arange(list_len) < lengths[:, None]
    valid = mask & (torch.rand(requests, list_len, generator=gen) < 0.9)
    labels = (torch.rand(requests, list_len, generator=gen) < 0.3).float() * mask
    scores = ((torch.randn(requests, list_len, generator=gen) + labels) * 2).round() / 2
    return scores, labels, valid


def test_per_request_hand_computed():
    per = per_request_metrics(*hand_batch(), ks=(2, 6))
    for key, expected in EXPECTED.items():
        assert per[key][:2].tolist() == pytest.approx(expected, rel=1e-12), key
        assert per[key][2:].isnan().all(), key  # no positive, no valid candidate
    assert per["num_valid"].tolist() == [4, 4, 2, 0]
    assert per["num_positive"].tolist() == [2, 2, 0, 0]


def test_accumulator_hand_computed_and_counts():
    acc = MetricAccumulator(ks=(2, 6))
    acc.update(*hand_batch())
    out = acc.compute()
    for key, expected in EXPECTED.items():
        assert out[key] == pytest.approx(sum(expected) / 2), key  # mean over the 2 ranked rows
    assert out["requests"] == 4
    assert out["requests_ranked"] == 2
    assert out["requests_no_positive"] == 1
    assert out["requests_no_valid"] == 1
    assert out["requests_auc"] == 2
    # Pooled over the 10 valid candidates: positives 0.1, 0.5, 0.3, 0.2; negatives
    # 0.9, 0.7, 0.3, 0.8, 0.4, 0.6. Wins: 0.5 beats 0.3, 0.4 (2); 0.3 ties 0.3 (1/2);
    # 0.1 and 0.2 beat nothing -> 2.5 / 24. Distinct scores land in distinct bins here.
    assert out["AUC_pooled"] == pytest.approx(2.5 / 24)
    assert out["AUC_pooled_err"] == pytest.approx(0.5 / 24)  # only the tied pair shares a bin


def test_ties_keep_original_order():
    scores = torch.zeros(2, 3)
    labels = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    per = per_request_metrics(scores, labels, torch.ones(2, 3, dtype=torch.bool), ks=(1, 2))
    # All tied: ranking = column order. Row 0's positive sits at rank 2, row 1's at rank 1.
    assert per["N@1"].tolist() == [0.0, 1.0]
    assert per["N@2"].tolist() == pytest.approx([1.0 / math.log2(3), 1.0])
    assert per["AUC"].tolist() == [0.5, 0.5]  # every pair is a tie


def test_oracle_ranking_is_perfect():
    scores, labels, valid = random_batch(torch.Generator().manual_seed(0), 64, 12)
    oracle = labels + torch.randn(labels.shape) * ~valid * 100  # garbage only on invalid slots
    per = per_request_metrics(oracle, labels, valid, ks=(1, 3, 6, 50))
    ranked = per["num_positive"] > 0
    assert ranked.sum() > 30
    for k in (1, 3, 6, 50):
        assert (per[f"N@{k}"][ranked] == 1).all()
        assert (per[f"M@{k}"][ranked] == 1).all()
        assert (per[f"H@{k}"][ranked] == 1).all()
    has_pair = ranked & (per["num_positive"] < per["num_valid"])
    assert (per["AUC"][has_pair] == 1).all()


def test_padding_and_unlabelled_candidates_change_nothing():
    gen = torch.Generator().manual_seed(1)
    scores, labels, valid = random_batch(gen, 32, 8)
    wide_len = 13
    # Spread the original columns over 13, keeping their order (it breaks ties); the 5 new
    # columns are invalid with garbage: huge or NaN scores and positive labels.
    keep = torch.randperm(wide_len, generator=gen)[:8].sort().values
    wide_scores = torch.randn(32, wide_len, generator=gen) * 1e3
    wide_scores[:, ::4] = math.nan
    wide_labels = torch.ones(32, wide_len)
    wide_valid = torch.zeros(32, wide_len, dtype=torch.bool)
    wide_scores[:, keep], wide_labels[:, keep], wide_valid[:, keep] = scores, labels, valid

    narrow = per_request_metrics(scores, labels, valid, ks=(1, 6, 20))
    wide = per_request_metrics(wide_scores, wide_labels, wide_valid, ks=(1, 6, 20))
    for key in narrow:
        assert torch.allclose(wide[key], narrow[key], rtol=1e-12, atol=0.0, equal_nan=True), key

    narrow_acc, wide_acc = MetricAccumulator(ks=(1, 6, 20)), MetricAccumulator(ks=(1, 6, 20))
    narrow_acc.update(scores, labels, valid)
    wide_acc.update(wide_scores, wide_labels, wide_valid)
    assert_same(wide_acc.compute(), narrow_acc.compute())


def test_requests_without_positive_or_candidates_are_excluded_and_counted():
    scores, labels, valid = random_batch(torch.Generator().manual_seed(2), 16, 6)
    base = MetricAccumulator()
    base.update(scores, labels, valid)
    # Three extra requests: two with valid negatives only, one with no valid candidate
    # (its labelled-looking positive is unlabelled).
    extra_scores = torch.tensor([[3.0, 1.0, 0.5] + [0.0] * 3, [2.0] + [0.0] * 5, [5.0] + [0.0] * 5])
    extra_labels = torch.tensor([[0.0] * 6, [0.0] * 6, [1.0] + [0.0] * 5])
    extra_valid = torch.tensor([[T, T, T, F, F, F], [T, F, F, F, F, F], [F] * 6])
    more = MetricAccumulator()
    more.update(
        torch.cat([scores, extra_scores]),
        torch.cat([labels, extra_labels]),
        torch.cat([valid, extra_valid]),
    )
    before, after = base.compute(), more.compute()
    for key in ("H@6", "N@6", "M@6", "F1@6", "AUC", "requests_ranked", "requests_auc"):
        assert after[key] == pytest.approx(before[key], rel=1e-12), key
    assert after["requests"] == before["requests"] + 3
    assert after["requests_no_positive"] == before["requests_no_positive"] + 2
    assert after["requests_no_valid"] == before["requests_no_valid"] + 1
    assert after["requests"] == (
        after["requests_ranked"] + after["requests_no_positive"] + after["requests_no_valid"]
    )


def test_batch_of_empty_lists_only_counts_requests():
    acc = MetricAccumulator()
    acc.update(torch.zeros(3, 0), torch.zeros(3, 0), torch.zeros(3, 0, dtype=torch.bool))
    out = acc.compute()
    assert out["requests"] == out["requests_no_valid"] == 3
    assert math.isnan(out["N@6"]) and math.isnan(out["AUC"]) and math.isnan(out["AUC_pooled"])


def test_merge_equals_one_pass_over_the_concatenated_batch():
    gen = torch.Generator().manual_seed(3)
    first, second = random_batch(gen, 20, 5), random_batch(gen, 30, 9)
    ks = (2, 6)
    part_a, part_b, whole = (MetricAccumulator(ks=ks) for _ in range(3))
    part_a.update(*first)
    part_b.update(*second)
    # Widen the first batch to L = 9 with padding so the two concatenate.
    padded_first = [torch.cat([t, t.new_zeros(20, 4)], dim=1) for t in first]
    whole.update(*(torch.cat([a, b]) for a, b in zip(padded_first, second)))
    # Through state_dict, as a worker's state would travel to the driver.
    merged = MetricAccumulator.from_state_dict(part_a.state_dict()).merge(part_b)
    assert_same(merged.compute(), whole.compute())
    assert merged.compute()["requests"] == 50


def test_all_reduce_round_trips_the_state(tmp_path):
    acc = MetricAccumulator(ks=(3, 6), pooled_bins=64)
    acc.update(*random_batch(torch.Generator().manual_seed(4), 16, 7))
    before = acc.compute()
    dist.init_process_group(
        "gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1
    )
    try:
        acc.all_reduce()  # one rank: the packed sum must unpack to the same state
    finally:
        dist.destroy_process_group()
    assert_same(acc.compute(), before)


@pytest.mark.parametrize("bins, loose", [(4096, False), (8, True)])
def test_pooled_auc_within_its_bound(bins: int, loose: bool):
    gen = torch.Generator().manual_seed(5)
    _, labels, valid = random_batch(gen, 64, 20)
    logits = torch.randn(labels.shape, generator=gen) + 1.5 * labels
    acc = MetricAccumulator(pooled_bins=bins)
    acc.update(logits, labels, valid)
    out = acc.compute()
    exact = exact_auc(logits[valid], labels[valid])
    assert abs(out["AUC_pooled"] - exact) <= out["AUC_pooled_err"] + 1e-12
    if loose:
        assert out["AUC_pooled_err"] > 0.01  # coarse bins: the bound is not vacuous
    else:
        assert out["AUC_pooled_err"] < 1e-3


def test_exact_auc_matches_brute_force_pairs():
    gen = torch.Generator().manual_seed(6)
    scores = (torch.randn(200, generator=gen) * 2).round() / 2  # many ties
    labels = (torch.rand(200, generator=gen) < 0.4).float()
    pos, neg = scores[labels == 1][:, None], scores[labels == 0][None, :]
    brute = ((pos > neg).double() + 0.5 * (pos == neg).double()).mean().item()
    assert exact_auc(scores, labels) == pytest.approx(brute, rel=1e-12)


def test_bad_inputs_are_rejected():
    scores, labels, valid = hand_batch()
    nan_on_valid = scores.clone()
    nan_on_valid[0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        per_request_metrics(nan_on_valid, labels, valid)
    with pytest.raises(ValueError, match="0 or 1"):
        per_request_metrics(scores, labels * 0.5, valid)
    with pytest.raises(ValueError, match="cannot merge"):
        MetricAccumulator(ks=(6,)).merge(MetricAccumulator(ks=(5,)))
