"""Thinking tokens (DiffuReason Eq. 1) and the pooling psi that aggregates them (Eq. 2)."""

from __future__ import annotations

import pytest
import torch

from recbole_diffureason.modules.thinking import ThinkingTokens, build_pooling, heads_that_divide

B, L, D = 5, 7, 16


def memory():
    torch.manual_seed(0)
    states = torch.randn(B, L, D)
    padding = torch.zeros(B, L, dtype=torch.bool)
    padding[0, 3:] = True  # a short sequence, right-padded as in RecBole
    return states, padding, states[:, 2]


def test_thoughts_shape_and_first_thought_is_h_last():
    states, padding, h_last = memory()
    thinker = ThinkingTokens(D, n_steps=3, n_heads=4)
    thoughts = thinker(states, padding, h_last)
    assert thoughts.shape == (B, 3, D)
    assert torch.equal(thoughts[:, 0], h_last)
    assert not torch.allclose(thoughts[:, 1], thoughts[:, 2])


def test_one_step_means_no_decoder_call():
    states, padding, h_last = memory()
    thinker = ThinkingTokens(D, n_steps=1)
    assert thinker.decoder is None
    assert torch.equal(thinker(states, padding, h_last), h_last.unsqueeze(1))


def test_padded_memory_positions_are_ignored():
    states, padding, h_last = memory()
    thinker = ThinkingTokens(D, n_steps=3, n_heads=4).eval()
    altered = states.clone()
    altered[0, 3:] = 100.0  # only padded slots of row 0 change
    assert torch.allclose(thinker(states, padding, h_last), thinker(altered, padding, h_last), atol=1e-6)


def test_last_context_sees_only_the_previous_thought():
    states, padding, h_last = memory()
    full = ThinkingTokens(D, n_steps=3, n_heads=4, context="full").eval()
    last = ThinkingTokens(D, n_steps=3, n_heads=4, context="last").eval()
    last.load_state_dict(full.state_dict())
    a, b = full(states, padding, h_last), last(states, padding, h_last)
    assert torch.allclose(a[:, 1], b[:, 1], atol=1e-6)  # step 2 has one previous thought either way
    assert not torch.allclose(a[:, 2], b[:, 2], atol=1e-4)


def test_post_ln_decoder_has_no_final_norm_and_other_outputs():
    states, padding, h_last = memory()
    pre = ThinkingTokens(D, n_steps=2, n_heads=4).eval()
    post = ThinkingTokens(D, n_steps=2, n_heads=4, norm_first=False).eval()
    assert pre.decoder.norm is not None and post.decoder.norm is None
    post.load_state_dict({k: v for k, v in pre.state_dict().items() if not k.startswith("decoder.norm")})
    assert not torch.allclose(pre(states, padding, h_last), post(states, padding, h_last))


def test_residual_thoughts_start_at_h_last_and_learn_a_step():
    states, padding, h_last = memory()
    thinker = ThinkingTokens(D, n_steps=3, n_heads=4, output="residual")
    thoughts = thinker(states, padding, h_last)
    for r in range(3):
        assert torch.equal(thoughts[:, r], h_last)  # a zero-initialised step: every thought is h_L before training
    thoughts[:, 1:].sum().backward()
    assert thinker.residual_out.weight.grad.abs().sum() > 0  # the zero projection is trained
    with torch.no_grad():
        thinker.residual_out.weight.normal_()
    moved = thinker(states, padding, h_last)
    assert torch.equal(moved[:, 0], h_last) and not torch.allclose(moved[:, 1], h_last)
    assert not torch.allclose(moved[:, 2], moved[:, 1])
    assert ThinkingTokens(D, n_steps=3, n_heads=4).residual_out is None  # the paper: direct thoughts


def test_reset_zero_output_undoes_a_reinitialisation():
    thinker = ThinkingTokens(D, n_steps=2, n_heads=4, output="residual")
    thinker.apply(lambda m: m.weight.data.normal_() if isinstance(m, torch.nn.Linear) else None)
    assert thinker.residual_out.weight.abs().sum() > 0
    thinker.reset_zero_output()
    assert thinker.residual_out.weight.abs().sum() == 0 and thinker.residual_out.bias.abs().sum() == 0


def test_unknown_thought_output_is_rejected():
    with pytest.raises(ValueError, match="output must be one of"):
        ThinkingTokens(D, n_steps=2, n_heads=4, output="resid")


def test_heads_fall_back_to_a_divisor_of_the_width():
    assert heads_that_divide(50, 8) == 5
    assert heads_that_divide(64, 8) == 8
    assert ThinkingTokens(50, n_steps=2, n_heads=8).decoder.layers[0].self_attn.num_heads == 5


@pytest.mark.parametrize("name", ["attention", "mean", "last"])
def test_pooling_returns_one_vector(name):
    thoughts = torch.randn(B, 3, D)
    pooled = build_pooling(name, D)(thoughts)
    assert pooled.shape == (B, D)
    if name == "last":
        assert torch.equal(pooled, thoughts[:, -1])
    if name == "mean":
        assert torch.allclose(pooled, thoughts.mean(1))


def test_attention_pooling_is_a_convex_combination():
    thoughts = torch.randn(B, 3, D)
    pooled = build_pooling("attention", D)(thoughts)
    lo, hi = thoughts.min(dim=1).values, thoughts.max(dim=1).values
    assert torch.all(pooled >= lo - 1e-6) and torch.all(pooled <= hi + 1e-6)


def test_unknown_pooling_is_rejected():
    with pytest.raises(ValueError, match="Unknown pooling"):
        build_pooling("max", D)
