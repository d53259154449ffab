"""In-batch InfoNCE (ReaRec-PRL, LARES) and the pairwise-KL diversity term (ReaRec-ERL)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recbole_diffureason.modules.objectives import info_nce, mean_pairwise_kl, symmetric_info_nce

B, D = 4, 16


def test_info_nce_matches_the_formula_and_masks_false_negatives():
    torch.manual_seed(3)
    x, y = torch.randn(B, D), torch.randn(B, D)
    logits = x @ y.t() / 0.5
    expected = -(logits.diag() - torch.logsumexp(logits, dim=1)).mean()
    assert torch.allclose(info_nce(x, y, temperature=0.5), expected, atol=1e-6)
    cos = info_nce(x, y, similarity="cos")
    assert torch.allclose(cos, info_nce(F.normalize(x, dim=-1), F.normalize(y, dim=-1)), atol=1e-6)
    same = torch.zeros(B, B, dtype=torch.bool)
    same[0, 1] = same[2, 2] = True  # the diagonal (the positive itself) is never masked
    masked_logits = logits.clone()
    masked_logits[0, 1] = float("-inf")
    expected_masked = F.cross_entropy(masked_logits, torch.arange(B))
    assert torch.allclose(info_nce(x, y, temperature=0.5, false_negatives=same), expected_masked, atol=1e-6)
    assert torch.allclose(symmetric_info_nce(x, y), 0.5 * (info_nce(x, y) + info_nce(y, x)))


def test_info_nce_leading_dimensions_are_independent_problems():
    torch.manual_seed(4)
    x, y = torch.randn(3, B, D), torch.randn(3, B, D)
    per_step = torch.stack([info_nce(x[k], y[k]) for k in range(3)]).mean()
    assert torch.allclose(info_nce(x, y), per_step, atol=1e-6)


def naive_pairwise_kl(logits: torch.Tensor) -> torch.Tensor:
    """The official form: F.kl_div over the materialised [B, S, S, N] tensor."""
    probs, log_q = F.softmax(logits, dim=-1), F.log_softmax(logits.detach(), dim=-1)
    kl = F.kl_div(log_q.unsqueeze(2), probs.unsqueeze(1), reduction="none").sum(-1)  # [b, j, i]
    mask = ~torch.eye(logits.size(1), dtype=torch.bool)
    return kl[:, mask].mean()


def test_pairwise_kl_equals_the_materialised_form_in_value_and_gradient():
    torch.manual_seed(5)
    logits = torch.randn(B, 3, 11, requires_grad=True)
    fast = mean_pairwise_kl(F.log_softmax(logits, dim=-1))
    (grad_fast,) = torch.autograd.grad(fast, logits)
    slow = naive_pairwise_kl(logits)
    (grad_slow,) = torch.autograd.grad(slow, logits)
    assert torch.allclose(fast, slow, atol=1e-6) and fast > 0
    assert torch.allclose(grad_fast, grad_slow, atol=1e-6)


def test_pairwise_kl_is_zero_for_identical_or_single_steps():
    logits = torch.randn(B, 1, 11).repeat(1, 3, 1)
    assert mean_pairwise_kl(F.log_softmax(logits, -1)).abs() < 1e-6
    assert mean_pairwise_kl(F.log_softmax(torch.randn(B, 1, 11), -1)) == 0
