r"""
HSTUSID
#######

Reference:
    The Semantic-ID-augmented HSTU of the DiffuReason paper (appendix A.1; "HSTU" in its Table 2), over HSTU
    (Zhai et al. 2024). Design decisions: docs/design.md section 3.5.

* Input token (five tables): ``e(v) = E_id[v] + sum_{l=1..4} E^(l)[s_l(v)]``, each ``E^(l)`` with K + 1 rows (the
  last for the padding item).
* HSTU encoder (section 3), ``h_L`` = the L2-normalised output at the last item.
* Autoregressive SID decoder (:class:`recbole_diffureason.sid.decoder.SIDDecoder`) conditioned on ``h_L``;
  ``L_rec = sum_l CE(s_l)`` with teacher forcing; the ID embedding is used on the input side only.
* Evaluation: constrained beam search over the trie of the items' SIDs, width ``beam_width`` (>= the largest
  K of the metrics); ``full_sort_predict`` gives each beam's log-probability at its item's column and ``-inf``
  elsewhere, so RecBole's full-sort evaluator scores it unchanged (section 4.5).

The SIDs come from the dataset (``run_recbole_dr.py tokenize``); the run logs which SIDs it used.
"""

from __future__ import annotations

from logging import getLogger
from typing import Any, Dict, Mapping

import torch
import torch.nn as nn

from recbole_diffureason.keys import Bool, ConfigError, Float, Int, Key
from recbole_diffureason.model.hstu import HSTU_KEYS, HSTUBase
from recbole_diffureason.sid.beam import constrained_beam_search, exact_item_log_probs, full_sort_scores
from recbole_diffureason.sid.decoder import SIDDecoder
from recbole_diffureason.sid.table import FLAG_FIELD, SID_FIELD, codes_from_dataset, read_sid_meta
from recbole_diffureason.sid.trie import SIDTrie

SID_KEYS: Dict[str, Key] = {
    "codebook_size": Int(min=2),
    "beam_width": Int(min=1),
    "sid_decoder_layers": Int(min=1),
    "sid_decoder_heads": Int(min=1),
    "sid_decoder_inner_size": Int(min=1, optional=True),
    "sid_decoder_dropout": Float(min=0.0, max=1.0, max_inclusive=False),
    "tie_sid_heads": Bool(),
    "loss_type": HSTU_KEYS["loss_type"],
}


def require_sid_columns(config: dict) -> None:
    """SID models read the ``sid`` and ``has_sid`` item features: add them to ``load_col`` whatever the dataset
    YAML (which sits above the model's) says, so that ``--dataset=<any tokenized name>`` just works."""
    load_col = dict(config.get("load_col") or {"inter": [config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]]})
    item = list(load_col.get("item") or [])
    for field in (config["ITEM_ID_FIELD"], SID_FIELD, FLAG_FIELD):
        if field not in item:
            item.append(field)
    load_col["item"] = item
    config["load_col"] = load_col


def check_beam_covers_topk(config: Mapping[str, Any]) -> None:
    largest = max(config["topk"]) if isinstance(config.get("topk"), (list, tuple)) else config.get("topk")
    if largest and config["beam_width"] < largest:
        raise ConfigError(f"'beam_width' ({config['beam_width']}) must be at least the largest topk ({largest}): "
                          "each beam is one ranked item.")


class HSTUSID(HSTUBase):
    """HSTU with ID + Semantic-ID input embeddings, an autoregressive SID decoder and constrained beam search."""

    loss_names = ("rec",)
    config_keys = SID_KEYS

    @classmethod
    def apply_presets(cls, config: dict, explicit: Mapping[str, Any]) -> None:
        super().apply_presets(config, explicit)
        require_sid_columns(config)

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        check_beam_covers_topk(config)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        codes = codes_from_dataset(dataset)
        self.codebook_size, self.beam_width = config["codebook_size"], config["beam_width"]
        if int(codes.max()) >= self.codebook_size:
            raise ConfigError(f"The dataset's SIDs use code {int(codes.max())}, but codebook_size is "
                              f"{self.codebook_size}: set codebook_size to at least {int(codes.max()) + 1}.")
        self.register_buffer("item_codes", codes, persistent=False)
        self.levels = codes.size(1)
        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        nn.init.trunc_normal_(self.item_embedding.weight, std=0.02)
        self.code_embeddings = nn.ModuleList(
            nn.Embedding(self.codebook_size + 1, self.hidden_size, padding_idx=self.codebook_size)
            for _ in range(self.levels))
        for table in self.code_embeddings:
            nn.init.trunc_normal_(table.weight, std=0.02)
        self.decoder = SIDDecoder(self.code_embeddings, self.hidden_size, config["sid_decoder_layers"],
                                  config["sid_decoder_heads"], config["sid_decoder_inner_size"],
                                  config["sid_decoder_dropout"], max_prefix=2, tie_heads=config["tie_sid_heads"])
        self.trie = SIDTrie(codes, self.codebook_size)
        self.sid_source = read_sid_meta(dataset.dataset_path, dataset.dataset_name)
        getLogger().info(f"{type(self).__name__} uses the SIDs of {dataset.dataset_name}: "
                         f"{(self.sid_source or {}).get('source', 'unknown source')}, {self.levels} levels")

    def input_embeddings(self, item_seq: torch.Tensor) -> torch.Tensor:
        codes = self.item_codes[item_seq].masked_fill(self.item_codes[item_seq] < 0, self.codebook_size)
        return self.item_embedding(item_seq) + sum(self.code_embeddings[l](codes[..., l]) for l in range(self.levels))

    def prefix(self, interaction) -> torch.Tensor:
        """The decoder's conditioning tokens ``[B, P, d]``: ``h_L``."""
        return self.last_state(interaction).unsqueeze(1)

    def calculate_loss(self, interaction):
        codes = self.item_codes[interaction[self.POS_ITEM_ID]]
        return (self.decoder.loss(self.prefix(interaction), codes),)

    def decoding_trie(self) -> SIDTrie:
        if self.trie.item_codes.device != self.item_codes.device:
            self.trie.to(self.item_codes.device)
        return self.trie

    def full_sort_predict(self, interaction) -> torch.Tensor:
        prefix = self.prefix(interaction)
        items, scores = constrained_beam_search(self.decoder, self.decoder.start(prefix), prefix.size(0),
                                                self.decoding_trie(), self.beam_width)
        return full_sort_scores(items, scores, self.n_items)

    def predict(self, interaction) -> torch.Tensor:
        """Exact ``log P(item | user)`` of the given items, by teacher forcing their SIDs."""
        codes = self.item_codes[interaction[self.ITEM_ID]]
        logits = self.decoder.teacher_forced_logits(self.prefix(interaction), codes)
        log_probs = [torch.log_softmax(logits[l], dim=-1).gather(1, codes[:, l : l + 1]) for l in range(self.levels)]
        return torch.cat(log_probs, dim=1).sum(dim=1)

    def exact_full_sort(self, interaction) -> torch.Tensor:
        """``[B, n_items]`` exact log-probabilities of every item (small catalogues; checks the beam search)."""
        prefix = self.prefix(interaction)
        return exact_item_log_probs(self.decoder, self.decoder.start(prefix), prefix.size(0), self.decoding_trie())
