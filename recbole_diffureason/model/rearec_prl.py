r"""
ReaRecPRL
#########

Reference:
    ReaRec, Progressive Reasoning Learning (arXiv 2503.22675, section 3.3.2; official ``src/models/PRL.py``).
    Design decisions: docs/design.md section 1.4.

* representation: the last state ``h_R``;
* progressive temperature annealing: step k is scored at ``tau_k = tau * temp_scale^(R - k)``,
  ``L_PTA = CE(h_R E^T / tau, y) + pl_weight * mean_{k<R} CE(h_k E^T / tau_k, y)`` (clean branch only);
* reasoning-aware contrastive learning after the warm-up: a noisy copy of the batch (``ReaRec.reason`` with
  ``noisy_copy``) and, for k = 1..R, InfoNCE of noisy anchors against the clean states of the batch,
  ``L_CL = mean_{b,k} -log softmax_b'(h~_{b,k} . h_{b',k} / tau)[b]`` (dot product, one direction);
* ``L = L_PTA + cl_weight * L_CL``; ``L_CL = 0`` during the warm-up (official-code quirk 1).
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F

from recbole_diffureason.keys import Bool, Float, Key
from recbole_diffureason.model.rearec import ReaRec
from recbole_diffureason.modules.objectives import info_nce


class ReaRecPRL(ReaRec):
    """ReaRec-PRL: last-step representation, annealed step temperatures and noisy-trajectory contrast."""

    loss_names = ("rec", "progressive", "contrastive")
    config_keys: Dict[str, Key] = {
        "temp_scale": Float(min=0.0, min_inclusive=False),
        "pl_weight": Float(min=0.0),
        "cl_weight": Float(min=0.0),
        "noisy_self_feed": Bool(),
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.temp_scale = float(config["temp_scale"])
        self.pl_weight = float(config["pl_weight"])
        self.cl_weight = float(config["cl_weight"])
        self.noisy_self_feed = config["noisy_self_feed"]
        exponents = torch.arange(self.reason_step, 0, -1, dtype=torch.float32)
        # tau_k for k = 0..R-1; the last step keeps tau itself.
        self.register_buffer("step_temperatures", self.tau * self.temp_scale ** exponents, persistent=False)

    def representation(self, states: torch.Tensor) -> torch.Tensor:
        return states[:, -1]

    def contrast_active(self) -> bool:
        return self.cl_weight > 0 and self.noise_active()

    def calculate_loss(self, interaction) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        target = interaction[self.POS_ITEM_ID]
        contrast = self.contrast_active()
        states = self.reason(
            interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN],
            noise=self.noise_factor if contrast else 0.0, noisy_copy=contrast,
        )
        batch = target.size(0)
        clean = states[:batch]
        rec = F.cross_entropy(self.logits(clean[:, -1]), target)
        progressive = self.pl_weight * self.progressive_loss(clean[:, :-1], target)
        contrastive = rec.new_zeros(())
        if contrast:
            # [R, B, d]: one InfoNCE problem per reasoning step k = 1..R, noisy anchors vs clean candidates.
            noisy_steps, clean_steps = states[batch:, 1:].transpose(0, 1), clean[:, 1:].transpose(0, 1)
            contrastive = self.cl_weight * info_nce(noisy_steps, clean_steps, temperature=self.tau)
        return rec, progressive, contrastive

    def progressive_loss(self, earlier: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``mean_{k<R} CE(h_k E^T / tau_k, y)`` for ``earlier = [h_0..h_{R-1}]``."""
        logits = torch.matmul(earlier, self.item_table.t()) / self.step_temperatures.view(1, -1, 1)
        steps = earlier.size(1)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.repeat_interleave(steps))
