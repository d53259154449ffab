"""One constrained beam search for every Semantic-ID model, and the exact scorer that checks it.

A SID model (HSTU with an SID decoder, TIGER, their DiffuReason variants) only has to say how to score the next
code and how to extend or reorder its decoding state; :func:`constrained_beam_search` does the rest, one
vectorised step per level (docs/design.md section 4.5):

* log-probabilities of the next code for every live beam, ``[B, W, K]``;
* codes that lead to no item are masked with the trie (:class:`SIDTrie`), so every finished beam is an item;
* the best ``W`` of ``W * K`` extensions per user, their parents' states gathered (a KV cache is reordered, not
  recomputed).

Beams are scored by summed log-probabilities of the model's full softmax over codes, so a beam's score is the
item's exact ``log P(item | user)``; with ``W`` at least the number of distinct prefixes at every level the search
is exhaustive. :func:`full_sort_scores` turns the beams into the ``[B, n_items]`` tensor RecBole's full-sort
evaluator expects: the beam score at each beam item's column and ``-inf`` elsewhere.
"""

from __future__ import annotations

from typing import Any, Protocol, Tuple

import torch

from recbole_diffureason.sid.trie import SIDTrie


class SIDDecoder(Protocol):
    """What a model's SID decoder offers the search. ``state`` holds one row per live beam (a KV cache, say)."""

    def log_probs(self, state: Any, level: int) -> torch.Tensor:
        """``[rows, K]`` log-probabilities of the code at ``level`` for every row of ``state``."""

    def advance(self, state: Any, codes: torch.Tensor, level: int) -> Any:
        """The state after appending ``codes [rows]`` as the token of ``level``."""

    def reorder(self, state: Any, rows: torch.Tensor) -> Any:
        """The state made of the given rows, in that order (rows may repeat)."""


def constrained_beam_search(
    decoder: SIDDecoder, state: Any, batch_size: int, trie: SIDTrie, beam_width: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Best ``beam_width`` items per user and their log-probabilities, best first: ``([B, W], [B, W])``.

    ``state`` starts with one row per user. Where fewer than ``beam_width`` items exist, the extra beams hold item
    0 (RecBole's padding item) with score ``-inf``.
    """
    device = trie.children[0].device
    prefixes = torch.zeros(batch_size, 1, dtype=torch.long, device=device)
    scores = torch.zeros(batch_size, 1, device=device)
    codebook = trie.codebook_size
    for level in range(trie.levels):
        width = prefixes.size(1)
        log_probs = decoder.log_probs(state, level).view(batch_size, width, codebook)
        allowed = trie.allowed(level, prefixes)
        total = (scores.unsqueeze(-1) + log_probs).masked_fill(~allowed, float("-inf"))
        scores, flat = total.view(batch_size, -1).topk(min(beam_width, width * codebook), dim=-1)
        parents, codes = flat // codebook, flat % codebook
        alive = torch.isfinite(scores)
        prefixes = trie.step(level, prefixes.gather(1, parents), codes).clamp(min=0).masked_fill(~alive, 0)
        rows = (torch.arange(batch_size, device=device).unsqueeze(1) * width + parents).view(-1)
        state = decoder.reorder(state, rows)
        if level + 1 < trie.levels:
            state = decoder.advance(state, codes.view(-1), level)
    return prefixes, scores


def exact_item_log_probs(decoder: SIDDecoder, state: Any, batch_size: int, trie: SIDTrie) -> torch.Tensor:
    """``[B, n_items]`` exact ``log P(item | user)`` by teacher-forcing every item's SID (``-inf`` for non-items).

    Costs ``B * n_items * levels`` decoder steps: for tests and small catalogues, to check the beam search.
    """
    device = trie.item_codes.device
    items = ((trie.item_codes >= 0).all(dim=1)).nonzero(as_tuple=True)[0]
    n = len(items)
    state = decoder.reorder(state, torch.arange(batch_size, device=device).repeat_interleave(n))
    codes = trie.item_codes[items].repeat(batch_size, 1)  # [B * n, L], user-major like the state rows
    total = torch.zeros(batch_size * n, device=device)
    for level in range(trie.levels):
        total = total + decoder.log_probs(state, level).gather(1, codes[:, level : level + 1]).squeeze(1)
        if level + 1 < trie.levels:
            state = decoder.advance(state, codes[:, level], level)
    out = torch.full((batch_size, trie.n_items), float("-inf"), device=device)
    out[:, items] = total.view(batch_size, n)
    return out


def full_sort_scores(items: torch.Tensor, scores: torch.Tensor, n_items: int) -> torch.Tensor:
    """``[B, n_items]``: each beam's score at its item's column, ``-inf`` elsewhere (and at the padding item)."""
    out = torch.full((items.size(0), n_items), float("-inf"), device=scores.device, dtype=scores.dtype)
    out.scatter_(1, items, scores)
    out[:, 0] = float("-inf")
    return out
