"""Evaluation noise keyed by user id, shared by every model that draws a random start at inference.

A reasoning model that starts from noise (DiffuReason's warm start ``x^T = tau_R + eps``, LARES's ``T_0``)
would give metrics that depend on batch size, batch order and the number of DDP ranks if evaluation drew
that noise from the global RNG. Drawing it from a counter-based generator keyed by the user id makes a
seeded evaluation a pure function of the checkpoint and the data (docs/design.md section 5.6).
"""

from __future__ import annotations

import math

import torch


def keyed_normal(keys: torch.Tensor, dim: int, seed: int) -> torch.Tensor:
    """Standard normal noise that depends only on ``(seed, key)``, not on batching or device.

    Evaluation noise is drawn from this, keyed by user id, so a seeded evaluation gives the same metrics for
    any batch size, batch order or number of DDP ranks. Multiplications modulo the Mersenne prime 2**31 - 1
    keep every product below 2**62; the xor-shifts make the mixing non-linear.
    """
    modulus = 2_147_483_647
    columns = torch.arange(2 * dim, device=keys.device, dtype=torch.int64)
    state = (keys.to(torch.int64).unsqueeze(-1) % modulus) * 2 * dim + columns
    state = (state + (seed % modulus) * 7_919 + 1) % modulus
    for multiplier in (48_271, 69_621, 16_807, 48_271):
        state = (state * multiplier) % modulus
        state = state ^ (state >> 13)
        state = (state * 69_621 + 12_345) % modulus
        state = state ^ (state >> 16)
    state = state % modulus
    uniform = (state.double() + 0.5) / modulus
    u1, u2 = uniform[..., :dim], uniform[..., dim:]
    return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)).float()


def noise_keys(interaction, user_field: str, item_seq_field: str) -> torch.Tensor:
    """Keys for ``keyed_normal``: the user id, or, for a raw history without a user, a hash of the history."""
    if user_field in interaction.interaction:
        return interaction[user_field]
    seq = interaction[item_seq_field]
    return (seq * torch.arange(1, seq.size(1) + 1, device=seq.device) * 1_000_003).sum(dim=-1)
