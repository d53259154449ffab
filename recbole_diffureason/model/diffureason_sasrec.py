r"""
DiffuReasonSASRec
#################

Reference:
    DiffuReason ("Think-then-Diffuse") with the SASRec backbone, "DiffuReason-S" in Table 2.
    Design decisions: docs/design.md section 5 (5.7 for the SASRec integration).

The backbone is RecBole's own ``SASRec`` built from the same keys (``hidden_size``, ``n_layers``, ...), so a
run of ``SASRec`` and one of ``DiffuReasonSASRec`` with the same config share the backbone exactly. Items
are scored by the dot product with the backbone's item embedding table (tied weights):

* L_rec (Eq. 13) = CE(mu E^T, target) over all items, as SASRec's CE loss;
* v_target (Eq. 7) = E[target];
* reward (Eq. 9) = 1[argmax_{n >= 1} z_i E^T = target] by default (Hit@1), computed exactly with a pruned
  full-catalogue ranking (``reward_rank_method``).

``backbone_checkpoint`` (not in the paper, which trains everything from scratch) starts the backbone from a
trained ``SASRec`` checkpoint of the same data and sizes; with the zero-initialised anchor residual the model
then scores exactly as that SASRec before its first step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import torch

from recbole_diffureason import checkpoint
from recbole_diffureason.keys import SASREC_KEYS, ConfigError, Int, Key, Str, check_heads_divide_width
from recbole_diffureason.model.diffureason import DiffuReason
from recbole_diffureason.modules.grpo import rewards_from_rank, target_rank
from recbole_diffureason.modules.encoders import SASRecEncoder


class DiffuReasonSASRec(DiffuReason):
    """DiffuReason (Eqs. 1-13) over RecBole's SASRec with tied item embeddings."""

    backbone_name = "SASRec"
    config_keys: Dict[str, Key] = {**SASREC_KEYS, "n_layers": Int(min=1), "backbone_checkpoint": Str(optional=True)}

    @classmethod
    def check_config(cls, config: dict) -> None:
        super().check_config(config)
        check_heads_divide_width(config)

    def build_backbone(self, config, dataset) -> None:
        self.backbone = SASRecEncoder(config, dataset)
        if config["backbone_checkpoint"]:  # loading draws no random numbers: the other modules' init is unchanged
            self.load_backbone(config["backbone_checkpoint"], dataset)

    def load_backbone(self, path: str, dataset) -> None:
        """Copy the weights of a trained ``SASRec`` checkpoint (written through this plugin) into the backbone,
        after checking that it is a SASRec trained on this data with these sizes."""
        if not Path(path).is_file():
            raise ConfigError(f"backbone_checkpoint '{path}' does not exist: give the .pth file a SASRec run wrote "
                              "(saved_model_file, or saved/SASRec-<dataset>-<time>.pth).")
        state = checkpoint.load(path, map_location="cpu")
        trained = checkpoint.written_by(state)
        if trained != "SASRec":
            raise ConfigError(f"backbone_checkpoint '{path}' holds a {trained} checkpoint; it must be a SASRec one.")
        checkpoint.check_fingerprint(state, checkpoint.dataset_fingerprint(dataset), path)
        checkpoint.check_weights_fit(state, self.backbone.sasrec, path)
        self.backbone.sasrec.load_state_dict(state["state_dict"])

    def encode(self, interaction) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.backbone(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])

    @property
    def item_table(self) -> torch.Tensor:
        return self.backbone.item_embedding.weight

    def score_all(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.item_table.t()

    def score_items(self, z: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (z * self.item_table[items]).sum(dim=-1)

    def target_vector(self, interaction) -> torch.Tensor:
        return self.item_table[interaction[self.POS_ITEM_ID]]

    def action_rewards(self, actions: torch.Tensor, anchor_scores: torch.Tensor, interaction) -> torch.Tensor:
        ranks, full_share = target_rank(
            actions,
            self.item_table.detach(),
            interaction[self.POS_ITEM_ID],
            k=self.reward_k,
            anchor_scores=anchor_scores,
            method=self.reward_rank_method,
            n_candidates=self.reward_candidates,
        )
        self.record_diagnostics(reward_full_scan_share=full_share)
        return rewards_from_rank(ranks, self.reward, self.reward_k)
