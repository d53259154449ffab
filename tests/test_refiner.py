"""The diffusion refiner (DiffuReason Eqs. 3-7, appendix C.1) and the "w/o diffusion" Gaussian policy head."""

from __future__ import annotations

import math

import pytest
import torch

from recbole_diffureason.modules.refiner import (
    DiffusionRefiner,
    GaussianPolicyHead,
    bounded_sigma,
    cosine_alpha_bar,
    sinusoidal_embedding,
)

B, D = 5, 16


def test_cosine_schedule_ends_near_zero():
    alpha_bar = cosine_alpha_bar(16, 0.008)
    assert alpha_bar[0] == pytest.approx(1.0)
    assert alpha_bar[16] < 1e-6
    assert alpha_bar[8] == pytest.approx(0.494, abs=0.01)
    assert torch.all(alpha_bar[1:] <= alpha_bar[:-1])


def test_sinusoidal_embedding_halves():
    emb = sinusoidal_embedding(torch.tensor([0, 3]), 8)
    assert emb.shape == (2, 8)
    assert torch.allclose(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))


def test_sigma_stays_inside_its_clamp():
    raw = torch.linspace(-50, 50, 1001)
    sigma = bounded_sigma(raw, 1e-3, 1.0, 1e-5)
    assert sigma.min() >= 1e-3 and sigma.max() <= 1.0
    refiner = DiffusionRefiner(D, n_steps=4)
    with torch.no_grad():
        refiner.body[-1].bias[D:] = 40.0
    policy = refiner(torch.randn(B, D) * 100, torch.randn(B, D) * 100, sample_intermediate=True)
    assert policy.sigma.min() >= 1e-3 and policy.sigma.max() <= 1.0


def test_refiner_mean_path_is_deterministic_and_sampled_path_is_not():
    refiner = DiffusionRefiner(D, n_steps=4).eval()
    x, c = torch.randn(B, D), torch.randn(B, D)
    assert torch.equal(refiner(x, c, False).mu, refiner(x, c, False).mu)
    refiner.train()
    torch.manual_seed(1)
    a = refiner(x, c, True).mu
    torch.manual_seed(2)
    assert not torch.allclose(a, refiner(x, c, True).mu)


def test_given_step_noise_reproduces_the_chain():
    refiner = DiffusionRefiner(D, n_steps=4, dropout=0.0)
    x, c = torch.randn(B, D), torch.randn(B, D)
    noise = torch.randn(3, B, D)
    assert torch.equal(refiner(x, c, True, step_noise=noise).mu, refiner(x, c, True, step_noise=noise).mu)


def test_chain_gradient_reaches_condition_start_and_every_step():
    refiner = DiffusionRefiner(D, n_steps=4, dropout=0.0, output="residual")
    x = torch.randn(B, D, requires_grad=True)
    c = torch.randn(B, D, requires_grad=True)
    refiner(x, c, sample_intermediate=True).mu.sum().backward()
    assert x.grad.abs().sum() > 0 and c.grad.abs().sum() > 0
    assert all(p.grad is not None for p in refiner.parameters())


@pytest.mark.parametrize("output", ["residual", "cond_residual"])
def test_zero_init_residual_denoiser_starts_at_identity(output):
    refiner = DiffusionRefiner(D, n_steps=4, output=output, zero_init=True).eval()
    x, c = torch.randn(B, D), torch.randn(B, D)
    expected = x if output == "residual" else c
    assert torch.allclose(refiner(x, c, False).mu, expected, atol=1e-6)


def test_schedule_noise_scaling_changes_the_sampled_chain():
    plain = DiffusionRefiner(D, n_steps=4, dropout=0.0)
    scaled = DiffusionRefiner(D, n_steps=4, dropout=0.0, schedule_use="scale_step_noise")
    scaled.load_state_dict(plain.state_dict())
    x, c, noise = torch.randn(B, D), torch.randn(B, D), torch.randn(3, B, D)
    assert not torch.allclose(plain(x, c, True, noise).mu, scaled(x, c, True, noise).mu)
    assert scaled.step_noise_scale(2) == pytest.approx(math.sqrt(1 - float(scaled.alpha_bar[1])))


def test_policy_head_uses_the_given_mean():
    head = GaussianPolicyHead(D)
    mean, cond = torch.randn(B, D), torch.randn(B, D)
    policy = head(mean, cond)
    assert torch.equal(policy.mu, mean) and policy.sigma.shape == (B, D)
