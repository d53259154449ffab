"""The SID trie and the constrained beam search, checked against exact log-probabilities on a tiny catalogue."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from recbole_diffureason.sid.beam import constrained_beam_search, exact_item_log_probs, full_sort_scores
from recbole_diffureason.sid.trie import SIDTrie

K, LEVELS, D = 5, 3, 8


def random_codes(n_items: int, seed: int = 0) -> torch.Tensor:
    """Unique 3-level SIDs for items 1..n_items-1 (row 0 is the padding item)."""
    generator = torch.Generator().manual_seed(seed)
    every = torch.cartesian_prod(*[torch.arange(K)] * LEVELS)
    chosen = every[torch.randperm(len(every), generator=generator)[: n_items - 1]]
    return torch.cat([torch.full((1, LEVELS), -1), chosen])


@dataclass
class State:
    user: torch.Tensor  # [rows, D]
    history: torch.Tensor  # [rows, D], sum of the embeddings of the codes chosen so far


class ToyDecoder:
    """log p(s_l | user, s_<l) = log_softmax(W_l (user + sum of code embeddings)): a stand-in for HSTU/TIGER."""

    def __init__(self, seed: int = 1):
        generator = torch.Generator().manual_seed(seed)
        self.heads = torch.randn(LEVELS, K, D, generator=generator)
        self.embeddings = torch.randn(LEVELS, K, D, generator=generator)
        self.calls = 0

    def start(self, users: torch.Tensor) -> State:
        return State(users, torch.zeros_like(users))

    def log_probs(self, state: State, level: int) -> torch.Tensor:
        self.calls += 1
        return F.log_softmax((state.user + state.history) @ self.heads[level].t() * 3.0, dim=-1)

    def advance(self, state: State, codes: torch.Tensor, level: int) -> State:
        return State(state.user, state.history + self.embeddings[level][codes])

    def reorder(self, state: State, rows: torch.Tensor) -> State:
        return State(state.user[rows], state.history[rows])


@pytest.fixture
def setup():
    codes = random_codes(40)
    users = torch.randn(6, D, generator=torch.Generator().manual_seed(3))
    return SIDTrie(codes, K), ToyDecoder(), users


def test_trie_reaches_every_item_and_only_items():
    codes = random_codes(40)
    trie = SIDTrie(codes, K)
    for item in range(1, 40):
        prefix = torch.tensor(0)
        for level in range(LEVELS):
            assert trie.allowed(level, prefix)[codes[item, level]]
            prefix = trie.step(level, prefix, codes[item, level])
        assert int(prefix) == item
    assert int(trie.allowed(0, torch.tensor(0)).sum()) == len(torch.unique(codes[1:, 0]))
    assert trie.prefixes_of(0) == 1 and trie.prefixes_of(1) == len(torch.unique(codes[1:, 0]))


def test_trie_refuses_colliding_or_out_of_range_codes():
    codes = random_codes(10)
    codes[3] = codes[4]
    with pytest.raises(ValueError, match="share one Semantic ID"):
        SIDTrie(codes, K)
    with pytest.raises(ValueError, match="codebook_size"):
        SIDTrie(random_codes(10), K - 1)


@pytest.mark.parametrize("width", [1, 4, 10])
def test_beams_are_distinct_valid_items_best_first_scored_by_their_exact_log_probability(setup, width):
    trie, decoder, users = setup
    items, scores = constrained_beam_search(decoder, decoder.start(users), len(users), trie, width)
    exact = exact_item_log_probs(decoder, decoder.start(users), len(users), trie)
    assert items.shape == scores.shape == (len(users), width)
    assert ((items >= 1) & (items < 40)).all()
    assert all(len(set(row.tolist())) == width for row in items)
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    assert torch.allclose(scores, exact.gather(1, items), atol=1e-5)


def test_a_wide_enough_beam_is_exhaustive_and_agrees_with_the_exact_ranking(setup):
    trie, decoder, users = setup
    exact = exact_item_log_probs(decoder, decoder.start(users), len(users), trie)
    items, scores = constrained_beam_search(decoder, decoder.start(users), len(users), trie, beam_width=39)
    best, best_items = exact.topk(10, dim=-1)
    assert torch.equal(items[:, :10], best_items) and torch.allclose(scores[:, :10], best, atol=1e-5)
    # The search made one decoder call per level, for all users and beams at once.
    decoder.calls = 0
    constrained_beam_search(decoder, decoder.start(users), len(users), trie, beam_width=39)
    assert decoder.calls == LEVELS


def test_more_beams_than_items_pad_with_the_padding_item_at_minus_infinity(setup):
    trie, decoder, users = setup
    items, scores = constrained_beam_search(decoder, decoder.start(users), len(users), trie, beam_width=60)
    assert (items[:, 39:] == 0).all() and torch.isinf(scores[:, 39:]).all()
    assert torch.isfinite(scores[:, :39]).all()


def test_full_sort_scores_put_each_beam_at_its_item_column(setup):
    trie, decoder, users = setup
    items, scores = constrained_beam_search(decoder, decoder.start(users), len(users), trie, beam_width=4)
    full = full_sort_scores(items, scores, 40)
    assert full.shape == (len(users), 40)
    assert torch.equal(full.gather(1, items), scores)
    assert int(torch.isfinite(full).sum()) == len(users) * 4 and torch.isinf(full[:, 0]).all()
    assert torch.equal(full.topk(4, dim=-1).indices, items)
