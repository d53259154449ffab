"""Thinking tokens over a backbone's hidden states, and the pooling psi that aggregates them.

DiffuReason Eq. 1 (Alg. 1 lines 7-10): tau_1 = h_L and tau_r = ThinkDec(tau_<r, H) for r = 2..R, where
ThinkDec is a Transformer decoder that cross-attends to the backbone outputs H. Eq. 2: c = psi(tau_1..tau_R).
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
import torch.nn as nn

THINK_CONTEXTS = ("full", "last")
# direct: tau_r is ThinkDec's output (the paper). residual (not in the paper): tau_r = tau_{r-1} + W ThinkDec(...)
# with W zero-initialised, so every thought starts at h_L and training only moves it away as far as it helps.
THINK_OUTPUTS = ("direct", "residual")
POOLINGS = ("attention", "mean", "last")


def heads_that_divide(width: int, requested: int) -> int:
    """The largest head count <= ``requested`` that divides ``width`` (docs/design.md 5.2: 8 heads on d=50 -> 5)."""
    for heads in range(min(requested, width), 0, -1):
        if width % heads == 0:
            if heads != requested:
                logging.getLogger().warning(
                    f"{requested} attention heads do not divide width {width}; using {heads} heads."
                )
            return heads
    return 1


class ThinkingTokens(nn.Module):
    """Latent chain of thought: R tokens, the first being the backbone's last state ``h_L``.

    ThinkDec is a pre-LN Transformer decoder (causal self-attention over the thoughts so far, cross-attention
    to the unpadded backbone states, GELU FFN) with a final LayerNorm (``norm_first=False``: post-LN, no final
    LayerNorm); ``tau_r`` is its output at the last
    position. Step embeddings (docs/design.md [R] 5.10.2) tell the decoder which step it is on. ``context='last'``
    feeds only ``tau_{r-1}``, the literal Markov reading of Eq. 1. ``output='residual'`` (not in the paper) makes
    each thought a zero-initialised step from the previous one, ``tau_r = tau_{r-1} + W ThinkDec(...)``: supervised
    as next-item predictions, the paper's free thoughts lean on popular items (docs/results/diagnosis.md), while a
    step from ``h_L`` starts as the backbone's prediction.

    Args:
        hidden_size: width d of the backbone states.
        n_steps: R, counting ``tau_1 = h_L``; R = 1 means no decoder at all ("w/o CoT").
    """

    def __init__(
        self,
        hidden_size: int,
        n_steps: int = 3,
        n_layers: int = 2,
        n_heads: int = 8,
        inner_size: Optional[int] = None,
        dropout: float = 0.1,
        step_embedding: bool = True,
        context: str = "full",
        layer_norm_eps: float = 1e-5,
        norm_first: bool = True,
        output: str = "direct",
    ):
        super().__init__()
        if n_steps < 1:
            raise ValueError(f"n_steps (R) must be >= 1, got {n_steps}.")
        if context not in THINK_CONTEXTS:
            raise ValueError(f"context must be one of {THINK_CONTEXTS}, got {context!r}.")
        if output not in THINK_OUTPUTS:
            raise ValueError(f"output must be one of {THINK_OUTPUTS}, got {output!r}.")
        self.n_steps = n_steps
        self.context = context
        self.residual_out: Optional[nn.Linear] = None
        self.decoder: Optional[nn.TransformerDecoder] = None
        self.step_embedding: Optional[nn.Embedding] = None
        if n_steps > 1:
            layer = nn.TransformerDecoderLayer(
                d_model=hidden_size,
                nhead=heads_that_divide(hidden_size, n_heads),
                dim_feedforward=inner_size or 4 * hidden_size,
                dropout=dropout,
                activation="gelu",
                batch_first=True,
                norm_first=norm_first,
                layer_norm_eps=layer_norm_eps,
            )
            # Pre-LN layers leave their output unnormalised, hence the final LayerNorm; post-LN needs none.
            final_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps) if norm_first else None
            self.decoder = nn.TransformerDecoder(layer, num_layers=n_layers, norm=final_norm)
            if step_embedding:
                self.step_embedding = nn.Embedding(n_steps - 1, hidden_size)
            if output == "residual":
                self.residual_out = nn.Linear(hidden_size, hidden_size)
                self.reset_zero_output()

    def reset_zero_output(self) -> None:
        """Zero the residual step's projection again (after any re-initialisation of the module): each thought
        then starts at ``h_L``. Nothing to do for ``output='direct'``."""
        if self.residual_out is not None:
            nn.init.zeros_(self.residual_out.weight)
            nn.init.zeros_(self.residual_out.bias)

    def forward(self, memory: torch.Tensor, memory_padding_mask: torch.Tensor, h_last: torch.Tensor) -> torch.Tensor:
        """Return the thoughts ``[B, R, d]``.

        Args:
            memory: backbone states ``H`` of shape ``[B, L, d]``.
            memory_padding_mask: ``[B, L]``, True at padded positions (they are not attended to).
            h_last: ``h_L`` of shape ``[B, d]``, which becomes ``tau_1``.
        """
        thoughts = [h_last]
        for r in range(1, self.n_steps):
            if self.context == "full":
                prefix = torch.stack(thoughts, dim=1)
                positions = torch.arange(r, device=h_last.device)
            else:
                prefix = thoughts[-1].unsqueeze(1)
                positions = torch.tensor([r - 1], device=h_last.device)
            if self.step_embedding is not None:
                prefix = prefix + self.step_embedding(positions).unsqueeze(0)
            length = prefix.size(1)
            causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=h_last.device), diagonal=1)
            out = self.decoder(
                prefix, memory, tgt_mask=causal, memory_key_padding_mask=memory_padding_mask, tgt_is_causal=True
            )
            step = out[:, -1]
            thoughts.append(step if self.residual_out is None else thoughts[-1] + self.residual_out(step))
        return torch.stack(thoughts, dim=1)


class AttentionPooling(nn.Module):
    """Additive attention pooling (docs/design.md [R] 5.3): ``s_r = w^T tanh(W tau_r + b)``, ``c = sum_r softmax(s)_r tau_r``."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.score = nn.Linear(hidden_size, 1, bias=False)

    def forward(self, thoughts: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.score(torch.tanh(self.proj(thoughts))).squeeze(-1), dim=-1)
        return torch.einsum("br,brd->bd", weights, thoughts)


class MeanPooling(nn.Module):
    def forward(self, thoughts: torch.Tensor) -> torch.Tensor:
        return thoughts.mean(dim=1)


class LastPooling(nn.Module):
    def forward(self, thoughts: torch.Tensor) -> torch.Tensor:
        return thoughts[:, -1]


def build_pooling(name: str, hidden_size: int) -> nn.Module:
    """psi of Eq. 2 by name: ``attention`` (default), ``mean`` or ``last``."""
    if name == "attention":
        return AttentionPooling(hidden_size)
    if name == "mean":
        return MeanPooling()
    if name == "last":
        return LastPooling()
    raise ValueError(f"Unknown pooling {name!r}; choose one of {POOLINGS}.")
