"""LARES's depth-recurrent encoder and its log-normal Poisson depth sampling (LARES Eqs. 5-6)."""

from __future__ import annotations

import pytest
import torch

from recbole_diffureason.modules.recurrent_depth import DepthRecurrentEncoder, sample_depth
from tests.helpers import additive_mask, right_padded

B, L, D = 4, 6, 16


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
