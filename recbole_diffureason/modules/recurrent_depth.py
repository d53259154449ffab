"""LARES's depth-recurrent encoder (LARES Eqs. 5-6, docs/design.md 2.1-2.2).

``H = A(X)`` (pre-block), then ``T_i = C(LN(f(T_{i-1}, H)))`` for i = 1..k from a random ``T_0``: the core-block
``C`` is applied k times with the same weights, so depth scales compute, not parameters. The blocks are
RecBole's post-LN ``TransformerEncoder`` (as the SASRec baseline; the paper does not name a layer type) or,
as in RecBole3.0's reimplementation, pre-LN layers (``x + Attn(LN x)``, ``x + FFN(LN x)``, torch's own
``TransformerEncoderLayer(norm_first=True)``, no final LayerNorm).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
from recbole.model.layers import TransformerEncoder

AGGREGATIONS = ("add", "concat")
LAYER_TYPES = ("post_ln", "pre_ln")


def sample_depth(mean_depth: int, sigma: float, cap: int, generator: Optional[torch.Generator] = None) -> int:
    """Log-normal Poisson depth (Eq. 6): ``xi ~ N(log k - sigma^2/2, sigma^2)``, ``k = Poisson(e^xi) + 1``.

    ``E[e^xi] = mean_depth``, so the mean depth is about ``mean_depth + 1``; the result lies in ``[1, cap]``.
    """
    xi = torch.randn((), generator=generator) * sigma + math.log(mean_depth) - 0.5 * sigma ** 2
    depth = int(torch.poisson(xi.exp().reshape(1), generator=generator).item()) + 1
    return max(1, min(depth, cap))


class TransformerBlock(nn.Module):
    """A causal stack of ``n_layers`` Transformer layers over right-padded sequences."""

    def __init__(self, n_layers: int, hidden_size: int, n_heads: int, inner_size: int, hidden_dropout: float,
                 attn_dropout: float, hidden_act: str, layer_norm_eps: float, layer_type: str = "post_ln"):
        super().__init__()
        if layer_type not in LAYER_TYPES:
            raise ValueError(f"layer_type must be one of {LAYER_TYPES}, got {layer_type!r}.")
        self.layer_type = layer_type
        if layer_type == "post_ln":
            self.layers = TransformerEncoder(n_layers, n_heads, hidden_size, inner_size, hidden_dropout,
                                             attn_dropout, hidden_act, layer_norm_eps)
            return
        layer = nn.TransformerEncoderLayer(hidden_size, n_heads, dim_feedforward=inner_size, dropout=hidden_dropout,
                                           activation=hidden_act, layer_norm_eps=layer_norm_eps, batch_first=True,
                                           norm_first=True)
        layer.self_attn.dropout = attn_dropout  # torch uses one rate for both unless told otherwise
        self.layers = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """``attention_mask``: RecBole's additive causal + padding mask ``[B, 1, L, L]``; ``padding``: True = pad."""
        if self.layer_type == "post_ln":
            return self.layers(hidden, attention_mask, output_all_encoded_layers=False)[-1]
        length = hidden.size(1)
        causal = torch.ones(length, length, dtype=torch.bool, device=hidden.device).triu(1)
        return self.layers(hidden, mask=causal, src_key_padding_mask=padding)


class DepthRecurrentEncoder(nn.Module):
    """Pre-block (optional: ``pre_layers = 0`` is "w/o pre-block", ``H = X``) and a recurrent core-block.

    ``forward`` returns the thoughts at each sequence's last position, ``t_j = T_j[b, len_b - 1]`` for
    j = 1..depth, shape ``[B, depth, d]``.
    """

    def __init__(self, hidden_size: int, n_heads: int, inner_size: int, hidden_dropout: float, attn_dropout: float,
                 hidden_act: str, layer_norm_eps: float, pre_layers: int, core_layers: int,
                 aggregation: str = "add", layer_type: str = "post_ln"):
        super().__init__()
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}.")
        block = dict(hidden_size=hidden_size, n_heads=n_heads, inner_size=inner_size, hidden_dropout=hidden_dropout,
                     attn_dropout=attn_dropout, hidden_act=hidden_act, layer_norm_eps=layer_norm_eps,
                     layer_type=layer_type)
        self.pre_block = TransformerBlock(pre_layers, **block) if pre_layers > 0 else None
        self.core_block = TransformerBlock(core_layers, **block)
        self.core_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)  # one LN shared by every step
        self.merge = nn.Linear(2 * hidden_size, hidden_size) if aggregation == "concat" else None

    def aggregate(self, state: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """``f(T, H)``: ``T + H`` (RecBole3.0's ``(T + H) / 2`` is the same after the LN) or ``W [T; H]``."""
        if self.merge is None:
            return state + memory
        return self.merge(torch.cat([state, memory], dim=-1))

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor, padding: torch.Tensor, init_state: torch.Tensor,
                depth: int, last_index: torch.Tensor) -> torch.Tensor:
        memory = self.pre_block(x, attention_mask, padding) if self.pre_block is not None else x
        rows = torch.arange(x.size(0), device=x.device)
        state, thoughts = init_state, []
        for _ in range(depth):
            state = self.core_block(self.core_norm(self.aggregate(state, memory)), attention_mask, padding)
            thoughts.append(state[rows, last_index])
        return torch.stack(thoughts, dim=1)
