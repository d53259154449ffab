r"""
ReaRec base: autoregressive latent reasoning over RecBole's SASRec
##################################################################

Reference:
    Tang et al., "Think before Recommend: Unleashing the Latent Reasoning Power for Sequential
    Recommendation" (ReaRec, arXiv 2503.22675), and its official code (TangJiakai/ReaRec). Design decisions:
    docs/design.md section 1; the two learning methods are :class:`ReaRecERL` and :class:`ReaRecPRL`.

Reasoning wrapper (docs/design.md section 1.2)::

    h_0 = Enc(Dropout_w(LN_w(E[seq] + P[pos])))[len - 1]           step 0, keys/values cached per layer
    h_k = Enc_step(Dropout_w(LN_w(h_{k-1} + RPE[k-1])) | cache)     k = 1..R, one query against the cache
    S   = [h_0, h_1, ..., h_R]                                      [B, R+1, d]

The encoder is RecBole's ``SASRec`` (its item/position embeddings, ``TransformerEncoder`` and initialisation);
its embedding LayerNorm is ``LN_w``, which the official wrapper applies to the input of every step, and the
wrapper's own dropout (``wrapper_dropout``, hard-coded 0.2 officially) replaces SASRec's embedding dropout.
Items are scored by ``h E^T / tau`` with the tied item table.

Official-code quirks (docs/design.md section 1.6) and their keys:

1. ERL references an undefined ``noise_factor`` after warm-up: ERL's ``noise_factor`` defaults to 0 (no
   noise); a positive value adds the noise it seems to intend. PRL's contrastive term is 0 during warm-up.
2. PRL's noisy branch is fed the *clean* previous output plus noise; ``noisy_self_feed`` feeds it its own.
3. ``wrapper_dropout`` (0.2).
4. The temperature also divides evaluation scores (``scale_eval_logits``); rankings do not change.

Epochs: the official warm-up test is ``epoch > warmup`` with 1-based epochs. ``DRTrainer`` calls
``on_epoch_start`` with 0-based epochs, so noise is on from 0-based epoch ``warmup`` (official epoch
``warmup + 1``): with ``warmup = 2``, epochs 0 and 1 are noise-free.
"""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn as nn
from recbole.model.sequential_recommender import SASRec

from recbole_diffureason.keys import SASREC_KEYS, Bool, Float, Int, Key, check_heads_divide_width
from recbole_diffureason.model.abstract import ReasoningRecommender
from recbole_diffureason.modules import autoregressive


class ReaRec(ReasoningRecommender):
    """ReaRec's reasoning wrapper over RecBole's SASRec. Abstract: see :class:`ReaRecERL`, :class:`ReaRecPRL`."""

    abstract = True
    backbone_name = "SASRec"
    noisy_self_feed = False  # PRL's quirk-2 switch; ERL has no noisy branch
    config_keys: Dict[str, Key] = {
        **SASREC_KEYS,
        "n_layers": Int(min=1),
        "reason_step": Int(min=1),
        "tau": Float(min=0.0, min_inclusive=False),
        "wrapper_dropout": Float(min=0.0, max=1.0, max_inclusive=False),
        "noise_factor": Float(min=0.0),
        "warmup": Int(min=0),
        "scale_eval_logits": Bool(),
    }

    @classmethod
    def check_config(cls, config: dict) -> None:
        check_heads_divide_width(config)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.backbone = SASRec(config, dataset)
        self.reason_step = config["reason_step"]
        self.reason_pos_embedding = nn.Embedding(self.reason_step, config["hidden_size"])
        self.init_like_sasrec(self.reason_pos_embedding)
        self.wrapper_dropout = nn.Dropout(config["wrapper_dropout"])
        self.tau = float(config["tau"])
        self.noise_factor = float(config["noise_factor"])
        self.warmup = config["warmup"]
        self.scale_eval_logits = config["scale_eval_logits"]
        self.epoch = 0

    # ------------------------------------------------------------------ epochs
    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def noise_active(self) -> bool:
        """Official ``epoch > warmup`` (1-based) is 0-based ``epoch >= warmup``; never in evaluation."""
        return self.training and self.epoch >= self.warmup

    # ------------------------------------------------------------------ reasoning wrapper
    @property
    def item_table(self) -> torch.Tensor:
        return self.backbone.item_embedding.weight

    def step_input(self, x: torch.Tensor) -> torch.Tensor:
        """``Dropout_w(LN_w(x))``, applied to the item embeddings and to every reasoning token."""
        return self.wrapper_dropout(self.backbone.LayerNorm(x))

    def reason(
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, noise: float = 0.0, noisy_copy: bool = False
    ) -> torch.Tensor:
        """Reasoning states ``[B, R+1, d]``: ``h_0`` (the SASRec output) and the R reasoning steps.

        Args:
            noise: scale gamma of the Gaussian noise added to every reasoning-token input (before ``LN_w``).
            noisy_copy: PRL's contrastive view. The batch is duplicated and rows ``B..2B-1`` are the noisy
                branch: same step-0 input (other dropout masks), their own KV cache, step inputs
                ``h^clean_{k-1} + RPE[k-1] + noise * eps`` (or their own ``h_{k-1}`` with
                ``noisy_self_feed``). The noise then only reaches that branch; ``[2B, R+1, d]`` is returned.
        """
        batch = item_seq.size(0)
        if noisy_copy:
            item_seq, item_seq_len = item_seq.repeat(2, 1), item_seq_len.repeat(2)
        backbone = self.backbone
        positions = torch.arange(item_seq.size(1), device=item_seq.device)
        hidden = self.step_input(backbone.item_embedding(item_seq) + backbone.position_embedding(positions))
        encoded, cache = autoregressive.prefill(
            backbone.trm_encoder, hidden, backbone.get_attention_mask(item_seq), item_seq != 0
        )
        states = [backbone.gather_indexes(encoded, item_seq_len - 1)]
        for k in range(self.reason_step):
            previous = self.feed_back(states[-1], batch, noisy_copy)
            token = previous + self.reason_pos_embedding.weight[k]
            if noise > 0:
                token = token + noise * self.noise_like(token, batch, noisy_copy)
            output, cache = autoregressive.step(backbone.trm_encoder, self.step_input(token), cache)
            states.append(output)
        return torch.stack(states, dim=1)

    def feed_back(self, previous: torch.Tensor, batch: int, noisy_copy: bool) -> torch.Tensor:
        """The state fed to the next step: the noisy branch gets the clean one unless it feeds itself."""
        if not noisy_copy or self.noisy_self_feed:
            return previous
        return previous[:batch].repeat(2, 1)

    @staticmethod
    def noise_like(token: torch.Tensor, batch: int, noisy_copy: bool) -> torch.Tensor:
        eps = torch.randn_like(token)
        if noisy_copy:
            eps[:batch] = 0.0
        return eps

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """``states E^T / tau`` over all item ids (column 0 is padding, as in RecBole's SASRec CE)."""
        return torch.matmul(states, self.item_table.t()) / self.tau

    # ------------------------------------------------------------------ RecBole prediction API
    def representation(self, states: torch.Tensor) -> torch.Tensor:
        """The user vector scored at inference: ERL averages the states, PRL takes the last."""
        raise NotImplementedError

    def user_vector(self, interaction) -> torch.Tensor:
        states = self.reason(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        vector = self.representation(states)
        return vector / self.tau if self.scale_eval_logits else vector

    def predict(self, interaction) -> torch.Tensor:
        vector = self.user_vector(interaction)
        return (vector * self.backbone.item_embedding(interaction[self.ITEM_ID])).sum(dim=-1)

    def full_sort_predict(self, interaction) -> torch.Tensor:
        return self.user_vector(interaction) @ self.item_table.t()
