"""Evaluation noise keyed by user id (docs/design.md section 5.6)."""

from __future__ import annotations

import torch

from recbole_diffureason.modules.noise import keyed_normal

D = 16


def test_keyed_noise_depends_on_the_key_only():
    keys = torch.arange(100)
    full = keyed_normal(keys, D, seed=3)
    assert torch.equal(keyed_normal(keys[[7, 2]], D, seed=3), full[[7, 2]])
    assert not torch.allclose(keyed_normal(keys, D, seed=4), full)
    big = keyed_normal(torch.arange(5000), 32, seed=0)
    assert abs(big.mean().item()) < 0.02 and abs(big.std().item() - 1) < 0.02
