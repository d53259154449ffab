"""HSTU, the Hierarchical Sequential Transduction Unit (Zhai et al. 2024), as in Meta's research code.

docs/design.md sections 3.1-3.3. One layer, for ``x [B, N, d]``::

    n          = LN(x)                                  no affine parameters, eps 1e-6
    U, V, Q, K = SiLU(n W_uvqk)                         W_uvqk without bias, N(0, 0.02)
    S_ij       = Q_i . K_j + rab(i, j)                  per head, no 1/sqrt(d) scaling
    A          = SiLU(S) / N_max  (causal, padding masked)   pointwise aggregation, no softmax
    y          = W_o(Dropout(U * LN(A V))) + x         W_o with bias, Xavier-uniform

with ``rab(i, j) = w_pos[j - i + N_max - 1] + w_ts[bucket(t_{i+1} - t_j)]`` and
``bucket(dt) = clamp(floor(ln(max(|dt|, 1)) / 0.301), 0, 128)``. ``N_max`` is the fixed maximum length, so a
row's output never depends on how long the other rows of its batch are. There is no final LayerNorm; the
encoder's output is L2-normalised.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

TIME_BUCKETS = 128
BUCKET_DIVISOR = 0.301  # Meta's log base: buckets grow by about 2x in seconds


def time_buckets(delta: torch.Tensor, n_buckets: int = TIME_BUCKETS) -> torch.Tensor:
    """``clamp(floor(ln(max(|dt|, 1)) / 0.301), 0, n_buckets)`` as long."""
    # float64: a float32 log of a huge gap overflows to inf, and inf does not convert to an integer
    return (torch.log(delta.abs().double().clamp(min=1)) / BUCKET_DIVISOR).floor().clamp(0, n_buckets).long()


class RelativeBias(nn.Module):
    """``rab(i, j)``: a learned bias per relative position and per log-time bucket (both N(0, 0.02))."""

    def __init__(self, max_len: int, n_buckets: int = TIME_BUCKETS):
        super().__init__()
        self.max_len, self.n_buckets = max_len, n_buckets
        self.position = nn.Parameter(torch.empty(2 * max_len - 1).normal_(0, 0.02))
        self.time = nn.Parameter(torch.empty(n_buckets + 1).normal_(0, 0.02))

    def forward(self, length: int, next_timestamps: Optional[torch.Tensor], timestamps: Optional[torch.Tensor]) -> torch.Tensor:
        """``[B or 1, length, length]``: position term, plus the time term when timestamps are given.

        ``next_timestamps[b, i]`` is ``t_{i+1}`` (the next position's time; for the last position the query's),
        ``timestamps[b, j]`` is ``t_j``.
        """
        index = torch.arange(length, device=self.position.device)
        bias = self.position[index[None, :] - index[:, None] + self.max_len - 1].unsqueeze(0)
        if timestamps is None:
            return bias
        delta = next_timestamps.unsqueeze(2) - timestamps.unsqueeze(1)
        return bias + self.time[time_buckets(delta, self.n_buckets)]


class HSTULayer(nn.Module):
    def __init__(self, hidden_size: int, n_heads: int, qk_dim: int, v_dim: int, max_len: int, dropout: float,
                 use_time_bias: bool = True):
        super().__init__()
        self.n_heads, self.qk_dim, self.v_dim, self.max_len = n_heads, qk_dim, v_dim, max_len
        self.uvqk = nn.Parameter(torch.empty(hidden_size, n_heads * (2 * v_dim + 2 * qk_dim)).normal_(0, 0.02))
        self.output = nn.Linear(n_heads * v_dim, hidden_size)
        nn.init.xavier_uniform_(self.output.weight)
        self.bias = RelativeBias(max_len)
        self.use_time_bias = use_time_bias
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, next_timestamps: Optional[torch.Tensor] = None,
                timestamps: Optional[torch.Tensor] = None) -> torch.Tensor:
        batch, length, _ = x.shape
        h, dq, dv = self.n_heads, self.qk_dim, self.v_dim
        normed = F.layer_norm(x, (x.size(-1),), eps=1e-6)
        u, v, q, k = torch.split(F.silu(normed @ self.uvqk), [h * dv, h * dv, h * dq, h * dq], dim=-1)
        q, k, v = (t.view(batch, length, h, -1).transpose(1, 2) for t in (q, k, v))  # [B, h, N, .]
        scores = q @ k.transpose(-1, -2)
        if self.use_time_bias:
            scores = scores + self.bias(length, next_timestamps, timestamps).unsqueeze(1)
        else:
            scores = scores + self.bias(length, None, None).unsqueeze(1)
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        mask = causal[None, None] & valid[:, None, None, :] & valid[:, None, :, None]
        attention = F.silu(scores) / self.max_len * mask
        out = (attention @ v).transpose(1, 2).reshape(batch, length, h * dv)
        out = F.layer_norm(out, (h * dv,), eps=1e-6)
        return self.output(self.dropout(u * out)) + x


class HSTUEncoder(nn.Module):
    """Input embedding (``E x sqrt(d) + P``, dropout, padding zeroed) and a stack of :class:`HSTULayer`.

    ``forward`` takes the input item embeddings (ID or ID + SID sums), so SID variants reuse it unchanged.
    """

    def __init__(self, hidden_size: int, n_layers: int, n_heads: int, qk_dim: int, v_dim: int, max_len: int,
                 dropout: float, use_time_bias: bool = True):
        super().__init__()
        self.hidden_size = hidden_size
        self.position = nn.Embedding(max_len, hidden_size)
        nn.init.trunc_normal_(self.position.weight, std=math.sqrt(1.0 / hidden_size))
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            HSTULayer(hidden_size, n_heads, qk_dim, v_dim, max_len, dropout, use_time_bias) for _ in range(n_layers))

    def forward(self, item_embeddings: torch.Tensor, valid: torch.Tensor, next_timestamps: Optional[torch.Tensor] = None,
                timestamps: Optional[torch.Tensor] = None) -> torch.Tensor:
        """All positions' outputs ``[B, N, d]`` (not normalised; :func:`l2_normalise` the one you score)."""
        positions = torch.arange(item_embeddings.size(1), device=item_embeddings.device)
        x = item_embeddings * math.sqrt(self.hidden_size) + self.position(positions)
        x = self.dropout(x) * valid.unsqueeze(-1)
        for layer in self.layers:
            x = layer(x, valid, next_timestamps, timestamps)
        return x


def next_position_timestamps(timestamps: torch.Tensor, lengths: torch.Tensor, query: Optional[torch.Tensor]) -> torch.Tensor:
    """``t_{i+1}`` for every position: the next item's time; for the last valid position, the query's time
    (Meta) or, when ``query`` is None, the last item's own time ([R] flag ``time_bias_uses_target``)."""
    shifted = torch.cat([timestamps[:, 1:], timestamps[:, -1:]], dim=1).clone()
    rows = torch.arange(len(lengths), device=timestamps.device)
    last = lengths - 1
    shifted[rows, last] = query.to(timestamps.dtype) if query is not None else timestamps[rows, last]
    return shifted
