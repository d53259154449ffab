r"""
TIGER
#####

Reference:
    Rajput et al., "Recommender Systems with Generative Retrieval" (NeurIPS 2023). Design decisions:
    docs/design.md sections 4.4-4.5.

A T5 encoder-decoder (:mod:`recbole_diffureason.modules.t5`) over Semantic-ID tokens:

* vocabulary: PAD = 0, level-l code c = ``1 + l K + c``, EOS, then ``user_tokens`` user tokens
  (``hash(user) mod 2000`` in TIGER; 0 = none);
* encoder input ``[user, SID(v_1), ..., SID(v_n), EOS]`` for the (up to ``MAX_ITEM_LIST_LENGTH``) history items;
* decoder: start token PAD, target ``SID(v_{n+1}) + EOS``, token cross-entropy with teacher forcing;
* evaluation: constrained beam search over the trie of the items' SIDs (width ``beam_width``), each beam scored
  by the summed log-probabilities of its code tokens under the full-vocabulary softmax; ``full_sort_predict``
  returns the beam scores at the beam items' columns and ``-inf`` elsewhere for RecBole's evaluator.
"""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_diffureason.keys import Float, Int, Key
from recbole_diffureason.model.abstract import ReasoningRecommender
from recbole_diffureason.modules.t5 import T5DecoderState, T5Stack, reorder_state
from recbole_diffureason.sid.beam import constrained_beam_search, exact_item_log_probs, full_sort_scores
from recbole_diffureason.sid.items import SID_MODEL_KEYS, SemanticIDItems


class TIGERDecoding:
    """The beam search's view of TIGER's decoder: one code token per level, read off the vocabulary softmax."""

    def __init__(self, model: "TIGER"):
        self.model = model

    def log_probs(self, state: T5DecoderState, level: int) -> torch.Tensor:
        first = self.model.code_token(level, 0)
        log_probs = F.log_softmax(self.model.lm_head(state.last), dim=-1)
        return log_probs[:, first : first + self.model.codebook_size]

    def advance(self, state: T5DecoderState, codes: torch.Tensor, level: int) -> T5DecoderState:
        return self.model.decoder.step(state, self.model.embedding(self.model.code_token(level, codes)))

    def reorder(self, state: T5DecoderState, rows: torch.Tensor) -> T5DecoderState:
        return reorder_state(state, rows)


class TIGER(SemanticIDItems, ReasoningRecommender):
    """TIGER: generative retrieval of the next item's Semantic ID with a T5 encoder-decoder (section 4.4)."""

    loss_names = ("rec",)
    config_keys: Dict[str, Key] = {
        **SID_MODEL_KEYS,
        "d_model": Int(min=2),
        "encoder_layers": Int(min=1),
        "decoder_layers": Int(min=1),
        "n_heads": Int(min=1),
        "d_kv": Int(min=1),
        "d_ff": Int(min=1),
        "dropout_prob": Float(min=0.0, max=1.0, max_inclusive=False),
        "user_tokens": Int(min=0),
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.load_item_codes(config, dataset)
        self.eos = 1 + self.levels * self.codebook_size
        self.user_tokens = config["user_tokens"]
        vocabulary = self.eos + 1 + self.user_tokens
        d = config["d_model"]
        self.embedding = nn.Embedding(vocabulary, d, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=1.0)
        stack = dict(d_model=d, n_heads=config["n_heads"], d_kv=config["d_kv"], d_ff=config["d_ff"],
                     dropout=config["dropout_prob"])
        self.encoder = T5Stack(config["encoder_layers"], decoder=False, **stack)
        self.decoder = T5Stack(config["decoder_layers"], decoder=True, **stack)
        self.lm_head = nn.Linear(d, vocabulary, bias=False)
        nn.init.normal_(self.lm_head.weight, std=d ** -0.5)

    def code_token(self, level: int, codes):
        return 1 + level * self.codebook_size + codes

    def encoder_tokens(self, interaction) -> torch.Tensor:
        """``[B, 2 + N * levels]``: user token, the history items' SID tokens, EOS, then padding."""
        seq, length = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        codes = self.item_codes[seq]  # [B, N, levels], -1 at padding items
        levels = torch.arange(self.levels, device=seq.device)
        tokens = torch.where(codes >= 0, self.code_token(levels, codes), torch.zeros_like(codes)).flatten(1)
        batch = seq.size(0)
        if self.user_tokens > 0 and self.USER_ID in interaction.interaction:
            user = self.eos + 1 + interaction[self.USER_ID] % self.user_tokens
        else:
            user = torch.zeros(batch, dtype=torch.long, device=seq.device)
        tokens = torch.cat([user.unsqueeze(1), tokens, torch.zeros_like(user).unsqueeze(1)], dim=1)
        tokens[torch.arange(batch, device=seq.device), 1 + length * self.levels] = self.eos
        return tokens

    def encode(self, interaction):
        tokens = self.encoder_tokens(interaction)
        padding = tokens == 0
        if self.user_tokens == 0 or self.USER_ID not in interaction.interaction:
            padding[:, 0] = True
        return self.encoder.encode(self.embedding(tokens), padding), padding

    def target_tokens(self, items: torch.Tensor) -> torch.Tensor:
        levels = torch.arange(self.levels, device=items.device)
        return self.code_token(levels, self.item_codes[items])

    def calculate_loss(self, interaction):
        memory, padding = self.encode(interaction)
        target = self.target_tokens(interaction[self.POS_ITEM_ID])
        eos = torch.full_like(target[:, :1], self.eos)
        decoder_input = torch.cat([torch.zeros_like(eos), target], dim=1)  # start token PAD
        hidden = self.decoder.decode(self.embedding(decoder_input), memory, padding)
        logits = self.lm_head(hidden)
        return (F.cross_entropy(logits.reshape(-1, logits.size(-1)), torch.cat([target, eos], dim=1).reshape(-1)),)

    def start_decoding(self, interaction) -> T5DecoderState:
        memory, padding = self.encode(interaction)
        start = self.embedding(torch.zeros(memory.size(0), 1, dtype=torch.long, device=memory.device))
        return self.decoder.start(start, memory, padding)

    def full_sort_predict(self, interaction) -> torch.Tensor:
        state = self.start_decoding(interaction)
        items, scores = constrained_beam_search(TIGERDecoding(self), state, state.last.size(0), self.decoding_trie(),
                                                self.beam_width)
        return full_sort_scores(items, scores, self.n_items)

    def exact_full_sort(self, interaction) -> torch.Tensor:
        """``[B, n_items]`` exact log-probabilities of every item's SID tokens (small catalogues; checks the beam)."""
        state = self.start_decoding(interaction)
        return exact_item_log_probs(TIGERDecoding(self), state, state.last.size(0), self.decoding_trie())

    def predict(self, interaction) -> torch.Tensor:
        exact = self.exact_full_sort(interaction)
        return exact.gather(1, interaction[self.ITEM_ID].unsqueeze(1)).squeeze(1)
