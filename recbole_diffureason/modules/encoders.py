"""Adapters that turn a sequential backbone into ``(H, padding_mask, h_L)`` for the reasoning modules.

The backbone object is RecBole's own class (``recbole.model.sequential_recommender.SASRec``), built with the
same config keys, so ``--model=SASRec`` and the backbone of ``--model=DiffuReasonSASRec`` are the same
network with the same initialisation code.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn
from recbole.model.sequential_recommender import SASRec


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
        positions = torch.arange(item_seq.size(1), dtype=torch.long, device=item_seq.device)
        hidden = net.item_embedding(item_seq) + net.position_embedding(positions).unsqueeze(0)
        hidden = net.dropout(net.LayerNorm(hidden))
        states = net.trm_encoder(hidden, net.get_attention_mask(item_seq), output_all_encoded_layers=True)[-1]
        return states, item_seq == 0, net.gather_indexes(states, item_seq_len - 1)
