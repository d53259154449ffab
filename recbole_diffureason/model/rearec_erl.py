r"""
ReaRecERL
#########

Reference:
    ReaRec, Ensemble Reasoning Learning (arXiv 2503.22675, section 3.3.1; official ``src/models/ERL.py``).
    Design decisions: docs/design.md section 1.3.

* representation ``u = mean_{k=0..R} h_k`` (training and inference);
* ``L = CE(u E^T / tau, y) - kl_weight * mean_b mean_{i != j} KL(p_j || sg[p_i])`` with
  ``p_k = softmax(h_k E^T / tau)``: the diversity term is *maximised* (the official minus sign), so the
  total loss can be negative. The logged ``kl`` term is ``-kl_weight * KL``.
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F

from recbole_diffureason.keys import Float, Key
from recbole_diffureason.model.rearec import ReaRec
from recbole_diffureason.modules.objectives import mean_pairwise_kl


class ReaRecERL(ReaRec):
    """ReaRec-ERL: mean-pooled reasoning states with a pairwise-KL diversity bonus."""

    loss_names = ("rec", "kl")
    config_keys: Dict[str, Key] = {"kl_weight": Float(min=0.0)}

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.kl_weight = float(config["kl_weight"])

    def representation(self, states: torch.Tensor) -> torch.Tensor:
        return states.mean(dim=1)

    def calculate_loss(self, interaction) -> Tuple[torch.Tensor, torch.Tensor]:
        target = interaction[self.POS_ITEM_ID]
        noise = self.noise_factor if self.noise_active() else 0.0
        states = self.reason(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], noise=noise)
        rec = F.cross_entropy(self.logits(self.representation(states)), target)
        if self.kl_weight == 0:
            return rec, rec.new_zeros(())
        divergence = mean_pairwise_kl(F.log_softmax(self.logits(states), dim=-1))
        self.record_diagnostics(step_divergence=float(divergence.detach()))
        return rec, -self.kl_weight * divergence
