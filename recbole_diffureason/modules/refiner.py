"""Diffusion refinement of a latent thought (DiffuReason Eqs. 3-7, appendix C.1) and the Gaussian policy it ends in.

The reverse chain is warm-started at ``x^T = tau_R + eps_init`` and, for t = T..1, a shared denoiser maps
``[c ; x^t + t_emb]`` to a diagonal Gaussian ``(mu_t, sigma_t)``. Training samples the intermediate states
with the reparameterisation trick (docs/design.md [R] 5.10.11) so that L_rec and L_diff reach every step; evaluation
follows the means. The policy of the alignment loss is the last step's ``(mu_1, sigma_1)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

DENOISER_OUTPUTS = ("direct", "residual", "cond_residual", "anchor_residual")
SCHEDULE_USES = ("none", "scale_step_noise")


class GaussianPolicy(NamedTuple):
    mu: torch.Tensor
    sigma: torch.Tensor


def cosine_alpha_bar(n_steps: int, s: float = 0.008) -> torch.Tensor:
    """``alpha_bar_t = f(t)/f(0)`` with ``f(t) = cos^2(((t/T + s)/(1 + s)) pi/2)`` (Eq. 17), for t = 0..T."""
    t = torch.arange(n_steps + 1, dtype=torch.float64)
    f = torch.cos(((t / n_steps + s) / (1 + s)) * math.pi / 2) ** 2
    return (f / f[0]).clamp(min=0.0).float()


def sinusoidal_embedding(steps: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """``[sin | cos]`` embedding of integer steps, shape ``[len(steps), dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=steps.device) / half)
    angles = steps.float().unsqueeze(-1) * freqs
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    return F.pad(emb, (0, dim - 2 * half))


def bounded_sigma(raw: torch.Tensor, sigma_min: float, sigma_max: float, offset: float) -> torch.Tensor:
    """``clamp(softplus(raw) + offset, sigma_min, sigma_max)`` (appendix C.1.2)."""
    return (F.softplus(raw) + offset).clamp(sigma_min, sigma_max)


class DiffusionRefiner(nn.Module):
    """Learned Gaussian reverse chain conditioned on the pooled thought ``c``.

    Denoiser (appendix C.1.2): ``Linear(2d,4d) -> SiLU -> Dropout -> Linear(4d,4d) -> SiLU -> Dropout ->
    Linear(4d,2d)``, split into ``mu_t`` and ``sigma_t = clamp(softplus(.) + 1e-5, 1e-3, 1)``. ``mu_t`` is the
    output itself (``direct``, the paper), ``x^t + output`` (``residual``), ``c + output`` (``cond_residual``:
    every step refines the pooled thought) or ``anchor + output`` (``anchor_residual``: every step refines a given
    anchor, the backbone's ``h_L``). ``zero_init`` starts the mu half of the last layer at zero, so that the
    residual forms begin as the identity (``anchor_residual``: the model starts as its backbone exactly). The time embedding is sinusoidal followed by a
    two-layer SiLU MLP. The cosine schedule is kept as a buffer for logging; as the paper writes it, it does
    not enter the chain (``schedule_use='scale_step_noise'`` scales the step noise by sqrt(1 - alpha_bar)).
    """

    def __init__(
        self,
        hidden_size: int,
        n_steps: int = 16,
        hidden_mult: int = 4,
        dropout: float = 0.1,
        sigma_min: float = 1e-3,
        sigma_max: float = 1.0,
        softplus_offset: float = 1e-5,
        output: str = "direct",
        schedule_s: float = 0.008,
        schedule_use: str = "none",
        zero_init: bool = False,
    ):
        super().__init__()
        if output not in DENOISER_OUTPUTS:
            raise ValueError(f"output must be one of {DENOISER_OUTPUTS}, got {output!r}.")
        if schedule_use not in SCHEDULE_USES:
            raise ValueError(f"schedule_use must be one of {SCHEDULE_USES}, got {schedule_use!r}.")
        d, wide = hidden_size, hidden_mult * hidden_size
        self.hidden_size, self.n_steps = d, n_steps
        self.output, self.schedule_use = output, schedule_use
        self.sigma_bounds = (sigma_min, sigma_max, softplus_offset)
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.input_layer = nn.Linear(2 * d, wide)  # acts on [c ; x^t + t_emb]
        self.body = nn.Sequential(
            nn.SiLU(), nn.Dropout(dropout), nn.Linear(wide, wide), nn.SiLU(), nn.Dropout(dropout), nn.Linear(wide, 2 * d)
        )
        self.zero_init = zero_init
        self.reset_zero_output()
        self.register_buffer("alpha_bar", cosine_alpha_bar(n_steps, schedule_s), persistent=False)
        self.register_buffer("steps", torch.arange(1, n_steps + 1), persistent=False)

    def reset_zero_output(self) -> None:
        """With ``zero_init``, zero the mu half of the last layer again (after any re-initialisation of the module)."""
        if self.zero_init:
            nn.init.zeros_(self.body[-1].weight[: self.hidden_size])
            nn.init.zeros_(self.body[-1].bias[: self.hidden_size])

    def time_embeddings(self) -> torch.Tensor:
        """``t_emb`` for t = 1..T, shape ``[T, d]`` (row t-1 is step t)."""
        return self.time_mlp(sinusoidal_embedding(self.steps, self.hidden_size))

    def denoise(
        self, x_t: torch.Tensor, t_emb: torch.Tensor, cond: torch.Tensor, cond_part: torch.Tensor,
        anchor: Optional[torch.Tensor] = None,
    ) -> GaussianPolicy:
        """One reverse step. ``cond_part`` is the input layer applied to ``c`` alone, which is the same at every t."""
        d = self.hidden_size
        hidden = cond_part + F.linear(x_t + t_emb, self.input_layer.weight[:, d:], self.input_layer.bias)
        mu, raw_sigma = self.body(hidden).chunk(2, dim=-1)
        if self.output == "residual":
            mu = x_t + mu
        elif self.output == "cond_residual":
            mu = cond + mu
        elif self.output == "anchor_residual":
            mu = anchor + mu
        return GaussianPolicy(mu, bounded_sigma(raw_sigma, *self.sigma_bounds))

    def step_noise_scale(self, t: int) -> float:
        """Scale of the noise added when going from step t to t-1."""
        if self.schedule_use == "scale_step_noise":
            return float(torch.sqrt(1.0 - self.alpha_bar[t - 1]))
        return 1.0

    def forward(
        self,
        x_start: torch.Tensor,
        cond: torch.Tensor,
        sample_intermediate: bool,
        step_noise: Optional[torch.Tensor] = None,
        anchor: Optional[torch.Tensor] = None,
    ) -> GaussianPolicy:
        """Run t = T..1 from ``x_start = x^T`` and return ``(mu_1, sigma_1)``.

        Args:
            sample_intermediate: ``x^{t-1} = mu_t + sigma_t * xi_t`` (training) instead of ``mu_t`` (evaluation).
            step_noise: optional ``[T-1, B, d]`` values of ``xi_t`` (for t = 2..T, row t-2); drawn if omitted.
            anchor: ``[B, d]``, required by ``output='anchor_residual'``.
        """
        if self.output == "anchor_residual" and anchor is None:
            raise ValueError("output='anchor_residual' needs the anchor (e.g. the backbone's h_L).")
        t_emb = self.time_embeddings()
        cond_part = F.linear(cond, self.input_layer.weight[:, : self.hidden_size])
        x = x_start
        policy = None
        for t in range(self.n_steps, 0, -1):
            policy = self.denoise(x, t_emb[t - 1], cond, cond_part, anchor)
            if t == 1:
                break
            if sample_intermediate:
                xi = step_noise[t - 2] if step_noise is not None else torch.randn_like(policy.mu)
                x = policy.mu + policy.sigma * xi * self.step_noise_scale(t)
            else:
                x = policy.mu
        return policy


class GaussianPolicyHead(nn.Module):
    """The "w/o Diffusion" policy (docs/design.md 5.8): ``mu`` is given, ``sigma = clamp(softplus(W c) + 1e-5, 1e-3, 1)``."""

    def __init__(self, hidden_size: int, sigma_min: float = 1e-3, sigma_max: float = 1.0, softplus_offset: float = 1e-5):
        super().__init__()
        self.sigma_proj = nn.Linear(hidden_size, hidden_size)
        self.sigma_bounds = (sigma_min, sigma_max, softplus_offset)

    def forward(self, mean: torch.Tensor, cond: torch.Tensor) -> GaussianPolicy:
        return GaussianPolicy(mean, bounded_sigma(self.sigma_proj(cond), *self.sigma_bounds))
