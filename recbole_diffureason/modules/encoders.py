"""Backbone adapters and the SASRec input layers every ID model shares.

* ``SASRecEncoder`` turns RecBole's own ``SASRec`` (built with the same config keys, so ``--model=SASRec`` and
  the backbone of ``--model=DiffuReasonSASRec`` are the same network with the same initialisation) into
  ``(H, padding_mask, h_L)`` for the reasoning modules.
* ``add_sasrec_input_layers`` / ``embed_like_sasrec``: SASRec's item and position embeddings, LayerNorm and
  dropout, for models that build their own encoder on SASRec's input (LARES).
* ``init_like_sasrec``: RecBole's SASRec initialisation, for the modules a model adds.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn
from recbole.model.sequential_recommender import SASRec


def init_like_sasrec(module: nn.Module, std: float) -> None:
    """RecBole's SASRec initialisation: N(0, std) weights, zero biases, LayerNorm (1, 0). Use with ``apply``."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        module.weight.data.normal_(mean=0.0, std=std)
    elif isinstance(module, nn.LayerNorm):
        module.bias.data.zero_()
        module.weight.data.fill_(1.0)
    if isinstance(module, nn.Linear) and module.bias is not None:
        module.bias.data.zero_()


def add_sasrec_input_layers(
    owner: nn.Module, n_items: int, max_seq_length: int, hidden_size: int, layer_norm_eps: float, dropout: float
) -> None:
    """Register SASRec's input layers on ``owner`` under SASRec's names and in SASRec's order.

    Same names, so checkpoints read like SASRec's; same order, so a seeded run draws the same initial weights.
    """
    owner.item_embedding = nn.Embedding(n_items, hidden_size, padding_idx=0)
    owner.position_embedding = nn.Embedding(max_seq_length, hidden_size)
    owner.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
    owner.dropout = nn.Dropout(dropout)


def embed_like_sasrec(owner: nn.Module, item_seq: torch.Tensor) -> torch.Tensor:
    """``Dropout(LN(E[seq] + P[pos]))`` with the input layers of ``owner`` (RecBole's SASRec or one built by
    ``add_sasrec_input_layers``), ``[B, L, d]``."""
    positions = torch.arange(item_seq.size(1), dtype=torch.long, device=item_seq.device)
    hidden = owner.item_embedding(item_seq) + owner.position_embedding(positions).unsqueeze(0)
    return owner.dropout(owner.LayerNorm(hidden))


class SASRecEncoder(nn.Module):
    """All positions of RecBole's SASRec instead of only the last one.

    It repeats the five lines of ``SASRec.forward`` before its final ``gather_indexes``; a test checks that
    ``h_L`` equals ``SASRec.forward`` exactly.
    """

    def __init__(self, config, dataset):
        super().__init__()
        self.sasrec = SASRec(config, dataset)

    @property
    def item_embedding(self) -> nn.Embedding:
        return self.sasrec.item_embedding

    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        net = self.sasrec
        hidden = embed_like_sasrec(net, item_seq)
        states = net.trm_encoder(hidden, net.get_attention_mask(item_seq), output_all_encoded_layers=True)[-1]
        return states, item_seq == 0, net.gather_indexes(states, item_seq_len - 1)
