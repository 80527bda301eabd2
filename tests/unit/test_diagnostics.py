"""DNR's TensorBoard diagnostics: the AUC by hand, and what one log step computes."""

from __future__ import annotations

import pytest
import torch

from dnr.config import DNRConfig, OptimConfig
from dnr.training.diagnostics import dnr_diagnostics
from dnr.training.step import build_train_parts, train_step
from tests.unit.rerank_helpers import TINY_DATA, make_batch, one_thread, tiny_model  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("phase, lambda_e", [("heuristic", 100), ("adversarial", 0)])
def test_a_log_step_reports_histograms_aucs_and_both_gradient_norms(phase, lambda_e):
    torch.manual_seed(0)
    dnr = DNRConfig(lambda_e=lambda_e, lambda_c=0.4, generator_hidden=8, noise_dim=4, hist_bins=8)
    parts = build_train_parts(tiny_model("add"), TINY_DATA, dnr, OptimConfig())
    batch = make_batch(num_requests=32)
    train_step(batch, parts, 0, tiny_model("add"), dnr, OptimConfig())  # the head leaves zero
    before = {k: v.clone() for k, v in parts.reranker.state_dict().items()}
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in parts.reranker.named_parameters()}
    diagnosis = dnr_diagnostics(parts, batch, phase, dnr)
    assert set(diagnosis.scalars) == {"diag/auc_real", "diag/auc_synthetic", "diag/grad_norm_direct",
                                      "diag/grad_norm_z", "diag/auc_real_running", "diag/lambda_c"}
    assert diagnosis.scalars["diag/lambda_c"] == pytest.approx(0.4)
    assert diagnosis.scalars["diag/grad_norm_direct"] > 0 and diagnosis.scalars["diag/grad_norm_z"] > 0
    # lambda_c < 0.5: every synthetic positive scores above every synthetic negative
    assert diagnosis.scalars["diag/auc_synthetic"] == 1.0
    assert 0.5 < diagnosis.scalars["diag/auc_real"] <= 1.0  # the helper's scores are labels + noise
    assert set(diagnosis.histograms) == {"scores/real", "scores/synthetic", "scores/real_quantile",
                                         "scores/synthetic_quantile"}
    n = int(batch.label_mask.sum())
    assert all(h.numel() == n for h in diagnosis.histograms.values())
    # diagnostics change no weight and write no gradient (the step's own are left as they were)
    assert all(torch.equal(before[k], v) for k, v in parts.reranker.state_dict().items())
    for name, p in parts.reranker.named_parameters():
        assert (p.grad is None) == (grads[name] is None) and (p.grad is None or torch.equal(p.grad, grads[name]))


def test_no_diagnostics_without_dnr():
    dnr = DNRConfig(enabled=False)
    parts = build_train_parts(tiny_model("add"), TINY_DATA, dnr, OptimConfig())
    assert dnr_diagnostics(parts, make_batch(), "heuristic", dnr) is None
