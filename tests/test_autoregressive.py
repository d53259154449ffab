"""Single-token steps through RecBole's TransformerEncoder against cached keys and values (ReaRec)."""

from __future__ import annotations

import torch
from recbole.model.layers import TransformerEncoder

from recbole_diffureason.modules import autoregressive
from tests.helpers import additive_mask, right_padded

B, L, D = 4, 6, 16


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
