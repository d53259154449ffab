r"""
HSTU
####

Reference:
    Zhai et al., "Actions Speak Louder than Words: Trillion-Parameter Sequential Transducers for Generative
    Recommendations" (ICML 2024), and Meta's research code (generative-recommenders). Design decisions:
    docs/design.md section 3.

HSTU with ID items, scored against every item like SASRec, so it runs in RecBole's zoo with the same full-sort
evaluator: ``u = normalise(HSTU(E[seq])[len - 1])``, ``score(v) = cos(u, E[v]) / temperature`` and a full-softmax
CE over all items (section 3.4: the sampled softmax of the original, simplified to the full softmax, which
RecBole's catalogues afford). The relative attention bias uses the items' timestamps when the dataset has them
(``time_bias``); for the last position the query's timestamp (Meta's choice) or, with
``time_bias_uses_target: False``, the last item's own.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_diffureason.keys import Bool, Choice, Float, Int, Key, require_divisible
from recbole_diffureason.model.abstract import ReasoningRecommender
from recbole_diffureason.modules.hstu import HSTUEncoder, next_position_timestamps

HSTU_KEYS: Dict[str, Key] = {
    "hidden_size": Int(min=2),
    "n_layers": Int(min=1),
    "n_heads": Int(min=1),
    "qk_dim": Int(min=1, optional=True),
    "v_dim": Int(min=1, optional=True),
    "dropout_prob": Float(min=0.0, max=1.0, max_inclusive=False),
    "time_bias": Bool(),
    "time_bias_uses_target": Bool(),
    "loss_type": Choice(choices=("CE",), why="the model trains with a full-softmax cross-entropy over all items"),
}


class HSTUBase(ReasoningRecommender):
    """The HSTU encoder over item input embeddings; subclasses say what an item's input embedding is."""

    abstract = True
    config_keys = HSTU_KEYS

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.hidden_size = config["hidden_size"]
        qk, v = config["qk_dim"] or self.hidden_size // config["n_heads"], config["v_dim"] or self.hidden_size // config["n_heads"]
        self.encoder = HSTUEncoder(self.hidden_size, config["n_layers"], config["n_heads"], qk, v,
                                   self.max_seq_length, config["dropout_prob"])
        time_field = config["TIME_FIELD"]
        self.time_list = f"{time_field}{config['LIST_SUFFIX']}" if time_field else None
        self.time_field = time_field
        self.time_bias = config["time_bias"] and self.time_list is not None and self.time_list in dataset.field2type
        self.time_bias_uses_target = config["time_bias_uses_target"]

    @classmethod
    def check_config(cls, config) -> None:
        if not (config["qk_dim"] and config["v_dim"]):
            require_divisible("hidden_size", config["hidden_size"], "n_heads", config["n_heads"])

    def input_embeddings(self, item_seq: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def states(self, interaction) -> torch.Tensor:
        """HSTU outputs at every position ``[B, N, d]``."""
        seq, length = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        valid = seq > 0
        timestamps = next_timestamps = None
        if self.time_bias:
            timestamps = interaction[self.time_list].float()
            query = interaction[self.time_field].float() if (
                self.time_bias_uses_target and self.time_field in interaction.interaction) else None
            next_timestamps = next_position_timestamps(timestamps, length, query)
        return self.encoder(self.input_embeddings(seq), valid, next_timestamps, timestamps)

    def last_state(self, interaction) -> torch.Tensor:
        """``h_L``: the L2-normalised output at each sequence's last item, ``[B, d]``."""
        states = self.states(interaction)
        return F.normalize(self.gather_indexes(states, interaction[self.ITEM_SEQ_LEN] - 1), dim=-1)


class HSTU(HSTUBase):
    """HSTU (section 3) with ID items and cosine / temperature scores over the whole catalogue."""

    loss_names = ("rec",)
    config_keys = {"temperature": Float(min=0.0, min_inclusive=False)}

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        nn.init.trunc_normal_(self.item_embedding.weight, std=0.02)
        self.temperature = float(config["temperature"])

    def input_embeddings(self, item_seq: torch.Tensor) -> torch.Tensor:
        return self.item_embedding(item_seq)

    def logits(self, user: torch.Tensor, items: Optional[torch.Tensor] = None) -> torch.Tensor:
        table = F.normalize(self.item_embedding.weight if items is None else self.item_embedding(items), dim=-1)
        if items is not None:
            return (user * table).sum(dim=-1) / self.temperature
        return user @ table.t() / self.temperature

    def calculate_loss(self, interaction):
        return (F.cross_entropy(self.logits(self.last_state(interaction)), interaction[self.POS_ITEM_ID]),)

    def predict(self, interaction) -> torch.Tensor:
        return self.logits(self.last_state(interaction), interaction[self.ITEM_ID])

    def full_sort_predict(self, interaction) -> torch.Tensor:
        return self.logits(self.last_state(interaction))
