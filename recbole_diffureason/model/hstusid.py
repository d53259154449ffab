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

from typing import Dict

import torch
import torch.nn as nn

from recbole_diffureason.keys import Bool, Float, Int, Key
from recbole_diffureason.model.hstu import HSTUBase
from recbole_diffureason.sid.beam import constrained_beam_search, exact_item_log_probs, full_sort_scores
from recbole_diffureason.sid.decoder import SIDDecoder
from recbole_diffureason.sid.items import SID_MODEL_KEYS, SemanticIDItems


class HSTUSID(SemanticIDItems, HSTUBase):
    """HSTU with ID + Semantic-ID input embeddings, an autoregressive SID decoder and constrained beam search."""

    loss_names = ("rec",)
    config_keys: Dict[str, Key] = {
        **SID_MODEL_KEYS,
        "sid_decoder_layers": Int(min=1),
        "sid_decoder_heads": Int(min=1),
        "sid_decoder_inner_size": Int(min=1, optional=True),
        "sid_decoder_dropout": Float(min=0.0, max=1.0, max_inclusive=False),
        "tie_sid_heads": Bool(),
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.load_item_codes(config, dataset)
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

    def input_embeddings(self, item_seq: torch.Tensor) -> torch.Tensor:
        codes = self.item_codes[item_seq]
        codes = codes.masked_fill(codes < 0, self.codebook_size)  # the padding item reads each table's last row
        return self.item_embedding(item_seq) + sum(self.code_embeddings[l](codes[..., l]) for l in range(self.levels))

    def prefix(self, interaction) -> torch.Tensor:
        """The decoder's conditioning tokens ``[B, P, d]``: ``h_L``."""
        return self.last_state(interaction).unsqueeze(1)

    def calculate_loss(self, interaction):
        codes = self.item_codes[interaction[self.POS_ITEM_ID]]
        return (self.decoder.loss(self.prefix(interaction), codes),)

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
