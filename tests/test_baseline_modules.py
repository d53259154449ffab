"""Reusable parts of the baselines: KV-cached steps, InfoNCE, pairwise KL, rank from scores, k3 KL, depth sampling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from recbole.model.layers import TransformerEncoder

from recbole_diffureason.modules import autoregressive
from recbole_diffureason.modules.alignment import capped_rank_from_scores, k3_kl, target_rank
from recbole_diffureason.modules.objectives import info_nce, mean_pairwise_kl, symmetric_info_nce
from recbole_diffureason.modules.recurrent_depth import DepthRecurrentEncoder, sample_depth

B, L, D = 4, 6, 16


def additive_mask(valid: torch.Tensor) -> torch.Tensor:
    """RecBole's causal + padding mask for a right-padded batch."""
    causal = torch.tril(torch.ones(valid.size(1), valid.size(1), dtype=torch.bool))
    return torch.where(valid[:, None, None, :] & causal, 0.0, -10000.0)


def right_padded(lengths):
    valid = torch.zeros(len(lengths), L, dtype=torch.bool)
    for row, length in enumerate(lengths):
        valid[row, :length] = True
    return valid


# ---------------------------------------------------------------- KV-cached steps (ReaRec)
def test_prefill_equals_recbole_transformer_encoder():
    torch.manual_seed(0)
    encoder = TransformerEncoder(n_layers=2, n_heads=2, hidden_size=D, inner_size=32).eval()
    hidden, valid = torch.randn(B, L, D), right_padded([6, 3, 1, 4])
    expected = encoder(hidden, additive_mask(valid), output_all_encoded_layers=False)[-1]
    out, cache = autoregressive.prefill(encoder, hidden, additive_mask(valid), valid)
    assert torch.allclose(out, expected, atol=1e-6)
    assert len(cache.keys) == 2 and cache.keys[0].shape == (B, 2, L, D // 2)


def test_cached_steps_equal_full_reencoding_of_the_grown_sequence():
    """A reasoning token after the padded block sees the valid items, earlier reasoning tokens and itself."""
    torch.manual_seed(1)
    encoder = TransformerEncoder(n_layers=2, n_heads=2, hidden_size=D, inner_size=32).eval()
    hidden, valid = torch.randn(B, L, D), right_padded([6, 3, 1, 4])
    tokens = torch.randn(2, B, D)
    _, cache = autoregressive.prefill(encoder, hidden, additive_mask(valid), valid)
    outputs = []
    for token in tokens:
        out, cache = autoregressive.step(encoder, token, cache)
        outputs.append(out)
    grown = torch.cat([hidden, tokens.transpose(0, 1)], dim=1)
    grown_valid = torch.cat([valid, torch.ones(B, 2, dtype=torch.bool)], dim=1)
    full = encoder(grown, additive_mask(grown_valid), output_all_encoded_layers=False)[-1]
    assert torch.allclose(outputs[0], full[:, L], atol=1e-5)
    assert torch.allclose(outputs[1], full[:, L + 1], atol=1e-5)
    assert cache.valid.shape == (B, L + 2) and cache.keys[1].size(2) == L + 2


def test_cached_step_ignores_padded_positions():
    torch.manual_seed(2)
    encoder = TransformerEncoder(n_layers=1, n_heads=2, hidden_size=D, inner_size=32).eval()
    hidden, valid = torch.randn(B, L, D), right_padded([2, 2, 2, 2])
    token = torch.randn(B, D)
    _, cache = autoregressive.prefill(encoder, hidden, additive_mask(valid), valid)
    first, _ = autoregressive.step(encoder, token, cache)
    hidden[:, 2:] = torch.randn(B, L - 2, D)  # change only the padding
    _, cache = autoregressive.prefill(encoder, hidden, additive_mask(valid), valid)
    second, _ = autoregressive.step(encoder, token, cache)
    assert torch.allclose(first, second, atol=1e-6)


# ---------------------------------------------------------------- InfoNCE
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


# ---------------------------------------------------------------- pairwise KL (ReaRec-ERL)
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


# ---------------------------------------------------------------- ranks and KL (LARES GRPO)
def test_capped_rank_from_scores_agrees_with_target_rank():
    torch.manual_seed(6)
    table, queries = torch.randn(30, D), torch.randn(B, 3, D)
    target = torch.tensor([1, 5, 29, 7])
    scores = queries @ table.t()
    ranks = capped_rank_from_scores(scores.reshape(-1, 30), target.repeat_interleave(3), k=10).view(B, 3)
    expected, _ = target_rank(queries, table, target, k=10, method="full")
    assert torch.equal(ranks, expected)
    scores[:, :, 0] = 1e9  # the padding column never counts
    again = capped_rank_from_scores(scores.reshape(-1, 30), target.repeat_interleave(3), k=10).view(B, 3)
    assert torch.equal(again, ranks)


def test_k3_kl_is_zero_at_the_reference_and_positive_elsewhere():
    lp = torch.tensor([-1.0, -2.0, -0.5])
    assert torch.equal(k3_kl(lp, lp), torch.zeros(3))
    assert (k3_kl(lp, lp - 0.3) > 0).all() and (k3_kl(lp, lp + 0.3) > 0).all()


# ---------------------------------------------------------------- depth-recurrent encoder (LARES)
def test_depth_sampling_has_mean_near_kbar_plus_one_and_respects_the_cap():
    generator = torch.Generator().manual_seed(0)
    depths = [sample_depth(3, 0.5, cap=9, generator=generator) for _ in range(4000)]
    assert min(depths) >= 1 and max(depths) <= 9
    assert abs(sum(depths) / len(depths) - 4.0) < 0.15


@pytest.mark.parametrize("layer_type,aggregation,pre_layers", [("post_ln", "add", 1), ("pre_ln", "concat", 2),
                                                                ("post_ln", "add", 0)])
def test_recurrent_encoder_shapes_and_padding(layer_type, aggregation, pre_layers):
    torch.manual_seed(7)
    encoder = DepthRecurrentEncoder(D, n_heads=2, inner_size=32, hidden_dropout=0.0, attn_dropout=0.0,
                                    hidden_act="gelu", layer_norm_eps=1e-12, pre_layers=pre_layers, core_layers=1,
                                    aggregation=aggregation, layer_type=layer_type).eval()
    x, valid = torch.randn(B, L, D), right_padded([6, 3, 1, 4])
    init = torch.randn(B, L, D)
    last = valid.sum(1) - 1
    thoughts = encoder(x, additive_mask(valid), ~valid, init, depth=3, last_index=last)
    assert thoughts.shape == (B, 3, D)
    assert (encoder.pre_block is None) == (pre_layers == 0)
    x2, init2 = x.clone(), init.clone()
    x2[~valid], init2[~valid] = 5.0, -5.0  # padding must not reach the valid positions
    again = encoder(x2, additive_mask(valid), ~valid, init2, depth=3, last_index=last)
    assert torch.allclose(thoughts, again, atol=1e-5)
    assert torch.isfinite(thoughts).all()
