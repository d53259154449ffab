"""The autoregressive SID decoder of HSTU's SID variant (docs/design.md section 3.5), with a KV cache.

A small causal Transformer reads ``[c_1..c_P; E^(1)[s_1]; ...; E^(L-1)[s_{L-1}]]`` (P conditioning tokens: ``h_L``,
or ``[h_L; z]`` for DiffuReason) and predicts code ``s_l`` at the position before it with a level-specific head
``W^(l)``; ``log P(v | c) = sum_l log p(s_l | c, s_<l)``. Training uses teacher forcing; decoding goes through
:func:`recbole_diffureason.sid.beam.constrained_beam_search`, which this class serves through ``log_probs``,
``advance`` and ``reorder`` on a :class:`DecoderState` holding every layer's keys and values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


class CachedBlock(nn.Module):
    """Pre-LN causal self-attention and GELU FFN that can extend its keys and values one token at a time."""

    def __init__(self, hidden_size: int, n_heads: int, inner_size: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.norm1, self.norm2 = nn.LayerNorm(hidden_size), nn.LayerNorm(hidden_size)
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)
        self.ffn = nn.Sequential(nn.Linear(hidden_size, inner_size), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(inner_size, hidden_size))
        self.dropout = nn.Dropout(dropout)
        self.attention_dropout = dropout

    def forward(self, x: torch.Tensor, past: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
                ) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        rows, length, width = x.shape
        q, k, v = (t.view(rows, length, self.n_heads, -1).transpose(1, 2)
                   for t in self.qkv(self.norm1(x)).chunk(3, dim=-1))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        before = k.size(2) - length
        # Query i sits at position before + i and sees every key up to it.
        mask = torch.ones(length, k.size(2), dtype=torch.bool, device=x.device).tril(diagonal=before)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                  dropout_p=self.attention_dropout if self.training else 0.0)
        x = x + self.dropout(self.out(attended.transpose(1, 2).reshape(rows, length, width)))
        x = x + self.dropout(self.ffn(self.norm2(x)))
        return x, (k, v)


@dataclass
class DecoderState:
    caches: List[Tuple[torch.Tensor, torch.Tensor]]  # per layer, [rows, heads, tokens, head_dim]
    last: torch.Tensor  # [rows, d], the final-normed output at the last token


class SIDDecoder(nn.Module):
    """Causal Transformer over a conditioning prefix and the codes decoded so far.

    Args:
        code_embeddings: the L tables ``E^(l)`` (K + 1 rows, the last one padding), shared with the model's input.
        max_prefix: the longest conditioning prefix (1 for HSTU, 2 for DiffuReason's ``[h_L; z]``).
        tie_heads: score level l with ``E^(l)[:K]`` instead of a separate head ``W^(l)``.
    """

    def __init__(self, code_embeddings: nn.ModuleList, hidden_size: int, n_layers: int = 2, n_heads: int = 2,
                 inner_size: Optional[int] = None, dropout: float = 0.2, max_prefix: int = 2, tie_heads: bool = False):
        super().__init__()
        self.levels = len(code_embeddings)
        self.codebook_size = code_embeddings[0].num_embeddings - 1
        self.code_embeddings = code_embeddings
        self.position = nn.Embedding(max_prefix + self.levels, hidden_size)
        self.blocks = nn.ModuleList(CachedBlock(hidden_size, n_heads, inner_size or 4 * hidden_size, dropout)
                                    for _ in range(n_layers))
        self.norm = nn.LayerNorm(hidden_size)
        self.tie_heads = tie_heads
        self.heads = None if tie_heads else nn.ModuleList(
            nn.Linear(hidden_size, self.codebook_size) for _ in range(self.levels))

    def head(self, hidden: torch.Tensor, level: int) -> torch.Tensor:
        if self.tie_heads:
            return hidden @ self.code_embeddings[level].weight[: self.codebook_size].t()
        return self.heads[level](hidden)

    def run(self, tokens: torch.Tensor, start: int, caches: Optional[List] = None) -> Tuple[torch.Tensor, List]:
        """Push ``tokens [rows, T, d]`` (positions ``start..start+T-1``) through every block."""
        x = tokens + self.position(torch.arange(start, start + tokens.size(1), device=tokens.device))
        new_caches = []
        for index, block in enumerate(self.blocks):
            x, cache = block(x, None if caches is None else caches[index])
            new_caches.append(cache)
        return self.norm(x), new_caches

    def teacher_forced_logits(self, prefix: torch.Tensor, codes: torch.Tensor) -> List[torch.Tensor]:
        """``[B, K]`` logits of every level given the true earlier codes ``codes [B, L]`` (training)."""
        inputs = [prefix] + [self.code_embeddings[l](codes[:, l]).unsqueeze(1) for l in range(self.levels - 1)]
        hidden, _ = self.run(torch.cat(inputs, dim=1), 0)
        first = prefix.size(1) - 1
        return [self.head(hidden[:, first + level], level) for level in range(self.levels)]

    def loss(self, prefix: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """``sum_l CE(s_l)`` with teacher forcing."""
        logits = self.teacher_forced_logits(prefix, codes)
        return sum(F.cross_entropy(logits[level], codes[:, level]) for level in range(self.levels))

    # ------------------------------------------------------------------ the beam search's interface
    def start(self, prefix: torch.Tensor) -> DecoderState:
        hidden, caches = self.run(prefix, 0)
        return DecoderState(caches, hidden[:, -1])

    def log_probs(self, state: DecoderState, level: int) -> torch.Tensor:
        return F.log_softmax(self.head(state.last, level), dim=-1)

    def advance(self, state: DecoderState, codes: torch.Tensor, level: int) -> DecoderState:
        start = state.caches[0][0].size(2)
        hidden, caches = self.run(self.code_embeddings[level](codes).unsqueeze(1), start, state.caches)
        return DecoderState(caches, hidden[:, -1])

    def reorder(self, state: DecoderState, rows: torch.Tensor) -> DecoderState:
        return DecoderState([(k[rows], v[rows]) for k, v in state.caches], state.last[rows])
