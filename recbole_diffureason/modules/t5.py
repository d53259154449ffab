"""A T5 encoder-decoder from torch modules, with T5's relative position buckets and a decoding KV cache.

TIGER (docs/design.md section 4.4) is T5 at small sizes (4 + 4 layers, d_model 128, d_ff 1024, 6 heads of 64,
ReLU FFN, dropout 0.1). T5's parts, as in the reference implementation: RMS LayerNorm without bias, pre-norm
residual blocks, attention without the 1/sqrt(d) scaling (folded into the initialisation), a relative position
bias computed by each stack's first layer and shared by all its layers (bidirectional buckets in the encoder,
causal ones in the decoder), no position bias in cross-attention, and a final norm per stack. Built here rather
than taken from a library: a few hundred lines, no extra dependency, and a cache the beam search can reorder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def relative_position_bucket(relative: torch.Tensor, bidirectional: bool, num_buckets: int = 32,
                             max_distance: int = 128) -> torch.Tensor:
    """T5's bucket of ``key_position - query_position``: exact for small distances, logarithmic beyond."""
    buckets = torch.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative > 0).long() * num_buckets
        relative = relative.abs()
    else:
        relative = -torch.clamp(relative, max=0)
    max_exact = num_buckets // 2
    large = max_exact + (torch.log(relative.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(relative < max_exact, relative, large)


class T5LayerNorm(nn.Module):
    """RMS norm with a scale and no bias or mean subtraction."""

    def __init__(self, size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


class T5Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_kv: int, dropout: float, relative_bias: bool = False,
                 bidirectional: bool = True, num_buckets: int = 32, max_distance: int = 128, cross: bool = False):
        super().__init__()
        inner = n_heads * d_kv
        self.cross = cross
        self.n_heads, self.d_kv = n_heads, d_kv
        self.q, self.k, self.v = (nn.Linear(d_model, inner, bias=False) for _ in range(3))
        self.o = nn.Linear(inner, d_model, bias=False)
        nn.init.normal_(self.q.weight, std=(d_model * d_kv) ** -0.5)
        nn.init.normal_(self.k.weight, std=d_model ** -0.5)
        nn.init.normal_(self.v.weight, std=d_model ** -0.5)
        nn.init.normal_(self.o.weight, std=inner ** -0.5)
        self.dropout = dropout
        self.bidirectional, self.num_buckets, self.max_distance = bidirectional, num_buckets, max_distance
        self.relative_bias = nn.Embedding(num_buckets, n_heads) if relative_bias else None
        if self.relative_bias is not None:
            nn.init.normal_(self.relative_bias.weight, std=d_model ** -0.5)

    def position_bias(self, query_positions: torch.Tensor, key_length: int) -> torch.Tensor:
        """``[1, heads, Q, K]`` bias for queries at ``query_positions`` against keys ``0..key_length-1``."""
        keys = torch.arange(key_length, device=query_positions.device)
        bucket = relative_position_bucket(keys[None, :] - query_positions[:, None], self.bidirectional,
                                          self.num_buckets, self.max_distance)
        return self.relative_bias(bucket).permute(2, 0, 1).unsqueeze(0)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.size(0), x.size(1), self.n_heads, self.d_kv).transpose(1, 2)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, memory: Optional[torch.Tensor] = None,
                past: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
                ) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """``bias``: additive ``[B or 1, heads, Q, K]`` (position bias plus masks). Self-attention extends ``past``;
        cross-attention (``memory``) reuses ``past`` as the encoder's keys and values once they exist."""
        q = self.split(self.q(x))
        if self.cross:
            k, v = past if past is not None else (self.split(self.k(memory)), self.split(self.v(memory)))
        else:
            k, v = self.split(self.k(x)), self.split(self.v(x))
            if past is not None:
                k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        weights = F.softmax((q @ k.transpose(-1, -2) + bias).float(), dim=-1).type_as(q)
        weights = F.dropout(weights, p=self.dropout, training=self.training)
        out = (weights @ v).transpose(1, 2).reshape(x.size(0), x.size(1), -1)
        return self.o(out), (k, v)


class T5Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_kv: int, d_ff: int, dropout: float, decoder: bool,
                 relative_bias: bool):
        super().__init__()
        self.self_norm = T5LayerNorm(d_model)
        self.self_attention = T5Attention(d_model, n_heads, d_kv, dropout, relative_bias, bidirectional=not decoder)
        self.cross_norm = T5LayerNorm(d_model) if decoder else None
        self.cross_attention = T5Attention(d_model, n_heads, d_kv, dropout, cross=True) if decoder else None
        self.ff_norm = T5LayerNorm(d_model)
        self.wi, self.wo = nn.Linear(d_model, d_ff, bias=False), nn.Linear(d_ff, d_model, bias=False)
        nn.init.normal_(self.wi.weight, std=d_model ** -0.5)
        nn.init.normal_(self.wo.weight, std=d_ff ** -0.5)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, self_bias, memory=None, cross_bias=None, self_past=None, cross_past=None):
        out, self_cache = self.self_attention(self.self_norm(x), self_bias, past=self_past)
        x = x + self.dropout(out)
        cross_cache = None
        if self.cross_attention is not None:
            out, cross_cache = self.cross_attention(self.cross_norm(x), cross_bias, memory=memory, past=cross_past)
            x = x + self.dropout(out)
        x = x + self.dropout(self.wo(self.dropout(F.relu(self.wi(self.ff_norm(x))))))
        return x, self_cache, cross_cache


@dataclass
class T5DecoderState:
    self_caches: List[Tuple[torch.Tensor, torch.Tensor]]
    cross_caches: List[Tuple[torch.Tensor, torch.Tensor]]
    cross_bias: torch.Tensor  # [rows, 1, 1, S] additive padding mask of the encoder memory
    last: torch.Tensor  # [rows, d]: the decoder's normed output at the last token


class T5Stack(nn.Module):
    """The encoder (``decoder=False``) or the decoder stack; embeddings are passed in, not owned."""

    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_kv: int, d_ff: int, dropout: float, decoder: bool):
        super().__init__()
        self.decoder = decoder
        self.blocks = nn.ModuleList(T5Block(d_model, n_heads, d_kv, d_ff, dropout, decoder, relative_bias=i == 0)
                                    for i in range(n_layers))
        self.final_norm = T5LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def self_bias(self, query_positions: torch.Tensor, key_length: int) -> torch.Tensor:
        bias = self.blocks[0].self_attention.position_bias(query_positions, key_length)
        if self.decoder:
            keys = torch.arange(key_length, device=bias.device)
            bias = bias.masked_fill(keys[None, None, None, :] > query_positions[None, None, :, None], float("-inf"))
        return bias

    def encode(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """Encoder outputs ``[B, S, d]`` for input embeddings ``x`` with ``padding [B, S]`` (True = pad)."""
        positions = torch.arange(x.size(1), device=x.device)
        bias = self.self_bias(positions, x.size(1)) + padding_bias(padding)
        x = self.dropout(x)
        for block in self.blocks:
            x, _, _ = block(x, bias)
        return self.dropout(self.final_norm(x))

    def decode(self, x: torch.Tensor, memory: torch.Tensor, memory_padding: torch.Tensor) -> torch.Tensor:
        """Teacher-forced decoder outputs ``[B, T, d]``."""
        positions = torch.arange(x.size(1), device=x.device)
        self_bias, cross_bias = self.self_bias(positions, x.size(1)), padding_bias(memory_padding)
        x = self.dropout(x)
        for block in self.blocks:
            x, _, _ = block(x, self_bias, memory, cross_bias)
        return self.dropout(self.final_norm(x))

    def start(self, x: torch.Tensor, memory: torch.Tensor, memory_padding: torch.Tensor) -> T5DecoderState:
        """Decode the start token(s) ``x [rows, T, d]`` and keep every cache for :meth:`step`."""
        positions = torch.arange(x.size(1), device=x.device)
        self_bias, cross_bias = self.self_bias(positions, x.size(1)), padding_bias(memory_padding)
        self_caches, cross_caches = [], []
        for block in self.blocks:
            x, self_cache, cross_cache = block(x, self_bias, memory, cross_bias)
            self_caches.append(self_cache)
            cross_caches.append(cross_cache)
        return T5DecoderState(self_caches, cross_caches, cross_bias, self.final_norm(x)[:, -1])

    def step(self, state: T5DecoderState, x: torch.Tensor) -> T5DecoderState:
        """Append one token embedding ``x [rows, d]``."""
        position = state.self_caches[0][0].size(2)
        self_bias = self.self_bias(torch.tensor([position], device=x.device), position + 1)
        hidden = x.unsqueeze(1)
        self_caches = []
        for block, self_past, cross_past in zip(self.blocks, state.self_caches, state.cross_caches):
            hidden, self_cache, _ = block(hidden, self_bias, None, state.cross_bias, self_past, cross_past)
            self_caches.append(self_cache)
        return T5DecoderState(self_caches, state.cross_caches, state.cross_bias, self.final_norm(hidden)[:, -1])


def padding_bias(padding: torch.Tensor) -> torch.Tensor:
    """``[B, 1, 1, S]``: -inf at padded keys."""
    return torch.zeros(padding.shape, device=padding.device).masked_fill(padding, float("-inf"))[:, None, None, :]


def reorder_state(state: T5DecoderState, rows: torch.Tensor) -> T5DecoderState:
    return T5DecoderState([(k[rows], v[rows]) for k, v in state.self_caches],
                          [(k[rows], v[rows]) for k, v in state.cross_caches], state.cross_bias[rows], state.last[rows])
