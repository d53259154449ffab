"""Single-token steps through RecBole's ``TransformerEncoder`` against cached keys and values.

ReaRec (docs/design.md 1.2) appends one reasoning token per step to the item sequence and reads the encoder's output at
that token. Attention is causal, so the item tokens never see the reasoning tokens and the keys and values of
every earlier token stay valid: each step only has to push one query through every layer. These functions
run RecBole's own ``TransformerLayer`` weights (``MultiHeadAttention`` and ``FeedForward``, post-LN) with the
keys and values supplied from a cache, so ``prefill`` equals ``TransformerEncoder.forward`` (a test checks it)
and ``step`` equals a full causal re-encoding of ``[items; r_1..r_k]`` read at the last token.
"""

from __future__ import annotations

from typing import List, NamedTuple, Tuple

import torch
from recbole.model.layers import MultiHeadAttention, TransformerEncoder

# RecBole's additive mask value (SequentialRecommender.get_attention_mask).
MASKED = -10000.0


class KVCache(NamedTuple):
    """Per-layer keys and values ``[B, heads, S, head_dim]`` and which of the S positions may be attended to."""

    keys: List[torch.Tensor]
    values: List[torch.Tensor]
    valid: torch.Tensor  # [B, S] bool


def split_heads(mha: MultiHeadAttention, x: torch.Tensor) -> torch.Tensor:
    """``[B, T, d] -> [B, heads, T, head_dim]``, RecBole's head layout."""
    return mha.transpose_for_scores(x).permute(0, 2, 1, 3)


def attend(
    mha: MultiHeadAttention, hidden: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """``MultiHeadAttention.forward`` for the queries of ``hidden [B, T, d]`` with the keys and values given.

    ``mask`` is additive and broadcasts to ``[B, heads, T, S]``.
    """
    query = split_heads(mha, mha.query(hidden))
    scores = torch.matmul(query, keys.transpose(-1, -2)) / mha.sqrt_attention_head_size + mask
    probs = mha.attn_dropout(mha.softmax(scores))
    context = torch.matmul(probs, values).permute(0, 2, 1, 3).reshape(hidden.size(0), hidden.size(1), -1)
    return mha.LayerNorm(mha.out_dropout(mha.dense(context)) + hidden)


def prefill(
    encoder: TransformerEncoder, hidden: torch.Tensor, attention_mask: torch.Tensor, valid: torch.Tensor
) -> Tuple[torch.Tensor, KVCache]:
    """Encode ``hidden [B, L, d]`` with RecBole's additive ``attention_mask [B, 1, L, L]``; keep every layer's K/V.

    ``valid [B, L]`` marks the positions later tokens may attend to (the non-padding items).
    """
    keys, values = [], []
    for layer in encoder.layer:
        mha = layer.multi_head_attention
        layer_keys, layer_values = split_heads(mha, mha.key(hidden)), split_heads(mha, mha.value(hidden))
        hidden = layer.feed_forward(attend(mha, hidden, layer_keys, layer_values, attention_mask))
        keys.append(layer_keys)
        values.append(layer_values)
    return hidden, KVCache(keys, values, valid)


def step(encoder: TransformerEncoder, token: torch.Tensor, cache: KVCache) -> Tuple[torch.Tensor, KVCache]:
    """Push one new token ``[B, d]`` through every layer; it attends to the valid cached positions and itself.

    Returns its final-layer output ``[B, d]`` and the cache extended by its keys and values. The cache is
    never modified in place, so gradients reach every earlier step.
    """
    hidden = token.unsqueeze(1)
    valid = torch.cat([cache.valid, cache.valid.new_ones(cache.valid.size(0), 1)], dim=1)
    mask = torch.where(valid, 0.0, MASKED).to(hidden.dtype)[:, None, None, :]
    keys, values = [], []
    for layer, old_keys, old_values in zip(encoder.layer, cache.keys, cache.values):
        mha = layer.multi_head_attention
        layer_keys = torch.cat([old_keys, split_heads(mha, mha.key(hidden))], dim=2)
        layer_values = torch.cat([old_values, split_heads(mha, mha.value(hidden))], dim=2)
        hidden = layer.feed_forward(attend(mha, hidden, layer_keys, layer_values, mask))
        keys.append(layer_keys)
        values.append(layer_values)
    return hidden.squeeze(1), KVCache(keys, values, valid)
