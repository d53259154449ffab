"""In-batch InfoNCE and pairwise-KL diversity, shared by the reasoning baselines.

* ``info_nce``: ReaRec-PRL's reasoning-aware contrastive loss (docs/design.md 1.4) and LARES's trajectory- and
  step-level alignment (docs/design.md 2.3, Eqs. 8-9): CE over the ``[B, B]`` similarity matrix with the matching row
  as the label.
* ``mean_pairwise_kl``: ReaRec-ERL's diversity term (docs/design.md 1.3) without the ``[B, S, S, N]`` tensor.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

SIMILARITIES = ("dot", "cos")


def info_nce(
    anchors: torch.Tensor,
    candidates: torch.Tensor,
    temperature: float = 1.0,
    similarity: str = "dot",
    false_negatives: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``mean_b -log softmax_b'(s(x_b, y_b') / temperature)[b]``; candidate b is anchor b's positive.

    Args:
        anchors, candidates: ``[..., B, d]``; leading dimensions are independent problems (e.g. steps).
        false_negatives: optional ``[B, B]`` bool, True where a candidate other than the positive must not
            count as a negative (DuoRec's same-target masking). The diagonal is ignored.
    """
    if similarity == "cos":
        anchors, candidates = F.normalize(anchors, dim=-1), F.normalize(candidates, dim=-1)
    elif similarity != "dot":
        raise ValueError(f"Unknown similarity {similarity!r}; choose one of {SIMILARITIES}.")
    logits = torch.matmul(anchors, candidates.transpose(-1, -2)) / temperature
    size = logits.size(-1)
    if false_negatives is not None:
        drop = false_negatives & ~torch.eye(size, dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(drop, float("-inf"))
    labels = torch.arange(size, device=logits.device).expand(logits.shape[:-1])
    return F.cross_entropy(logits.reshape(-1, size), labels.reshape(-1))


def symmetric_info_nce(x: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
    """``(F(x, y, {y}) + F(y, x, {x})) / 2`` (LARES Eqs. 8 and 9)."""
    return 0.5 * (info_nce(x, y, **kwargs) + info_nce(y, x, **kwargs))


def mean_pairwise_kl(log_probs: torch.Tensor) -> torch.Tensor:
    """``mean_b mean_{i != j} KL(p_j || sg[p_i])`` for ``log_probs [B, S, N]`` (log-softmax over N).

    ``KL(p_j || q_i) = sum p_j log p_j - sum p_j log q_i``: the cross terms of all pairs are one batched
    product ``p (log q)^T`` of shape ``[B, S, S]``, so memory stays ``O(B S N)``. Gradient flows only through
    the first argument, through both its entropy and its cross term, as ``F.kl_div(sg[log q], p)`` does.
    Returns 0 when S = 1 (no pairs).
    """
    steps = log_probs.size(1)
    if steps < 2:
        return log_probs.new_zeros(())
    probs = log_probs.exp()
    negative_entropy = (probs * log_probs).sum(dim=-1)  # [B, S]
    cross = torch.bmm(probs, log_probs.detach().transpose(1, 2))  # [B, j, i] = sum_n p_j log q_i
    off_diagonal = cross.sum(dim=(1, 2)) - cross.diagonal(dim1=1, dim2=2).sum(dim=-1)
    total = (steps - 1) * negative_entropy.sum(dim=-1) - off_diagonal
    return (total / (steps * (steps - 1))).mean()
