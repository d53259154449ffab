"""The prefix trie of valid Semantic-ID tuples, as tensors (docs/design.md section 4.5).

Every item has an L-level Semantic ID ``(s_1, ..., s_L)`` with codes in ``0..K-1``. Decoding one level at a time,
a prefix may only be extended by codes that lead to at least one real item. The trie stores, per level ``l``, a
table ``children[l][p, c]`` = index of the prefix ``p + (c,)`` among the level-``l+1`` prefixes, or -1 when no
item starts with it; at the last level the entry is the item id itself. A beam search then looks up allowed codes
and next states for a whole batch of beams with one gather per level, without Python callbacks per token.
"""

from __future__ import annotations

from typing import List

import torch


class SIDTrie:
    """Prefix trie over the SIDs of items ``1..N-1`` (row 0 of ``codes`` is RecBole's padding item).

    Args:
        codes: ``[N, L]`` integer codes, row ``i`` the SID of item id ``i``; rows whose codes are negative (and row
            0) are not items. Tuples must be unique (collisions resolved beforehand).
        codebook_size: K, the number of codes per level.
    """

    def __init__(self, codes: torch.Tensor, codebook_size: int):
        if codes.dim() != 2:
            raise ValueError(f"codes must be [n_items, levels], got shape {tuple(codes.shape)}.")
        codes = codes.long().cpu()
        items = torch.arange(codes.size(0))
        valid = (codes >= 0).all(dim=1) & (items > 0)
        if (codes[valid] >= codebook_size).any():
            raise ValueError(f"A code is >= codebook_size ({codebook_size}).")
        self.codebook_size = codebook_size
        self.levels = codes.size(1)
        self.n_items = codes.size(0)
        items, codes = items[valid], codes[valid]
        if torch.unique(codes, dim=0).size(0) != codes.size(0):
            raise ValueError("Two items share one Semantic ID; resolve collisions before building the trie.")
        self.children: List[torch.Tensor] = []
        prefix_index = torch.zeros(len(items), dtype=torch.long)  # every item starts at the root (prefix 0)
        n_prefixes = 1
        for level in range(self.levels):
            table = torch.full((n_prefixes, codebook_size), -1, dtype=torch.long)
            key = prefix_index * codebook_size + codes[:, level]
            if level == self.levels - 1:
                table.view(-1)[key] = items
            else:
                unique, inverse = torch.unique(key, return_inverse=True)
                table.view(-1)[unique] = torch.arange(len(unique))
                prefix_index, n_prefixes = inverse, len(unique)
            self.children.append(table)
        self.item_codes = torch.full((self.n_items, self.levels), -1, dtype=torch.long)
        self.item_codes[items] = codes

    def to(self, device) -> "SIDTrie":
        self.children = [table.to(device) for table in self.children]
        self.item_codes = self.item_codes.to(device)
        return self

    def allowed(self, level: int, prefixes: torch.Tensor) -> torch.Tensor:
        """``[..., K]`` bool: which codes extend each prefix index of ``level`` toward a real item."""
        return self.children[level][prefixes] >= 0

    def step(self, level: int, prefixes: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Prefix indices at ``level + 1`` (item ids after the last level) for ``prefixes`` extended by ``codes``."""
        return self.children[level][prefixes, codes]

    def prefixes_of(self, level: int) -> int:
        """Number of distinct valid prefixes of length ``level`` (1 for the empty prefix)."""
        return self.children[level].size(0)
