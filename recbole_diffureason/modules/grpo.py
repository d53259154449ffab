"""Group-relative policy optimisation (GRPO) and ranking rewards, shared by DiffuReason and LARES.

DiffuReason (Eqs. 8-11, appendix C.2) aligns a continuous Gaussian policy; LARES (Eqs. 11-12) a discrete
target-only policy over the item catalogue. Both use the same pieces: z-scored group advantages, the clipped
surrogate, the group statistics logged as diagnostics, rewards from the target's rank, and a KL to a frozen
reference (closed form for Gaussians, GRPO's k3 estimator for the discrete policy).

For a Gaussian policy ``(mu, sigma)`` and G actions ``z_i`` drawn from it, the loss is
``-mean_b (1/G) sum_i min(rho_i A_i, clip(rho_i, 1-eps, 1+eps) A_i)`` with ``rho_i = pi_theta(z_i)/pi_old(z_i)``
and group-normalised advantages ``A_i``. ``pi_old`` is the same forward pass detached, so ``rho = 1`` in value
and the gradient is REINFORCE with a group baseline: ``-(1/G) sum_i A_i grad log pi(z_i)``. That gradient
exists only if the actions are detached (docs/design.md 5.5.1): with ``z = mu + sigma * eps`` kept in the graph,
``(z - mu)/sigma = eps`` and the loss no longer depends on ``mu`` at all.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

REWARDS = ("hit", "ndcg")
ALIGN_GRADIENTS = ("score", "natural")
RANK_METHODS = ("pruned", "full")


def sample_actions(mu: torch.Tensor, sigma: torch.Tensor, group_size: int, detach: bool = True) -> torch.Tensor:
    """``z_i = mu + sigma * eps_i``, shape ``[B, G, d]``; detached unless ``detach=False`` (the no-op variant)."""
    eps = torch.randn(mu.size(0), group_size, mu.size(-1), device=mu.device, dtype=mu.dtype)
    z = mu.unsqueeze(1) + sigma.unsqueeze(1) * eps
    return z.detach() if detach else z


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Diagonal-Gaussian log-density summed over d, without the constant (Eq. 20); ``[B, G]``."""
    mu, sigma = mu.unsqueeze(1), sigma.unsqueeze(1)
    return -0.5 * (((z - mu) / sigma) ** 2 + 2.0 * torch.log(sigma)).sum(dim=-1)


def natural_gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A surrogate of :func:`gaussian_log_prob` whose gradient is the natural gradient (Fisher-preconditioned).

    The score ``d log pi / d mu = eps / sigma`` grows as ``1/sigma``; multiplied by the inverse Fisher information
    (``sigma^2`` for mu, ``sigma^2 / 2`` for sigma) it becomes ``sigma * eps`` and ``(eps^2 - 1) sigma / 2``,
    bounded by the policy's own scale. Only the gradient matters: GRPO here uses ``rho = exp(lp - sg(lp)) = 1``.
    """
    mu, sigma = mu.unsqueeze(1), sigma.unsqueeze(1)
    sigma_coefficient = ((((z - mu) / sigma) ** 2 - 1.0) * sigma / 2.0).detach()
    return (-0.5 * (z - mu) ** 2 + sigma_coefficient * sigma).sum(dim=-1)


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """``(r - mean_G r) / (std_G r + eps)`` with the unbiased std; a group of equal rewards gets zeros."""
    mean = rewards.mean(dim=-1, keepdim=True)
    std = rewards.std(dim=-1, keepdim=True) if rewards.size(-1) > 1 else torch.zeros_like(mean)
    return (rewards - mean) / (std + eps)


def clipped_surrogate_loss(
    log_prob: torch.Tensor, log_prob_old: torch.Tensor, advantages: torch.Tensor, clip_eps: float
) -> torch.Tensor:
    ratio = torch.exp(log_prob - log_prob_old)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * advantages
    return -torch.minimum(unclipped, clipped).mean()


def gaussian_policy_loss(
    mu: torch.Tensor,
    sigma: torch.Tensor,
    actions: torch.Tensor,
    rewards: torch.Tensor,
    clip_eps: float = 0.2,
    adv_eps: float = 1e-4,
    gradient: str = "score",
) -> Tuple[torch.Tensor, Dict[str, float]]:
    """GRPO loss for a diagonal Gaussian policy, plus diagnostics. ``gradient``: ``score`` (the paper: the
    gradient of the log-density) or ``natural`` (:func:`natural_gaussian_log_prob`).

    ``frac_groups_with_signal`` is the share of rows whose G rewards are not all equal; when it is near 0,
    the alignment term contributes no gradient.
    """
    advantages = group_advantages(rewards, adv_eps)
    if gradient not in ALIGN_GRADIENTS:
        raise ValueError(f"gradient must be one of {ALIGN_GRADIENTS}, got {gradient!r}.")
    log_prob = (natural_gaussian_log_prob if gradient == "natural" else gaussian_log_prob)(actions, mu, sigma)
    # pi_old is this same forward pass, frozen: rho = 1 in value and the gradient is A * grad log pi.
    loss = clipped_surrogate_loss(log_prob, log_prob.detach(), advantages, clip_eps)
    return loss, group_statistics(advantages, rewards)


def group_statistics(advantages: torch.Tensor, rewards: torch.Tensor) -> Dict[str, float]:
    """Diagnostics of one batch of groups ``[B, G]``.

    ``frac_groups_with_signal``: share of groups whose rewards are not all equal (only those carry a gradient);
    ``reward_mean``: mean reward over every sample.
    """
    return {
        "frac_groups_with_signal": float((advantages.abs() > 0).any(dim=-1).float().mean()),
        "reward_mean": float(rewards.mean()),
    }


def target_log_prob(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The discrete target-only policy: ``log softmax(scores)[target]`` for ``scores [B, k, N]``, ``[B, k]``."""
    picked = scores.gather(-1, target.view(-1, 1, 1).expand(-1, scores.size(1), 1)).squeeze(-1)
    return picked - torch.logsumexp(scores, dim=-1)


def diag_gaussian_kl(mu: torch.Tensor, sigma: torch.Tensor, mu_ref: torch.Tensor, sigma_ref: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, sigma) || N(mu_ref, sigma_ref))`` summed over d, per row."""
    return (
        torch.log(sigma_ref / sigma) + (sigma ** 2 + (mu - mu_ref) ** 2) / (2.0 * sigma_ref ** 2) - 0.5
    ).sum(dim=-1)


def rewards_from_rank(capped_rank: torch.Tensor, kind: str, k: int) -> torch.Tensor:
    """Reward from the 0-based rank of the target: ``hit`` = 1[rank < k], ``ndcg`` = 1/log2(rank + 2) if rank < k."""
    inside = capped_rank < k
    if kind == "hit":
        return inside.float()
    if kind == "ndcg":
        return torch.where(inside, 1.0 / torch.log2(capped_rank.float() + 2.0), torch.zeros_like(capped_rank, dtype=torch.float))
    raise ValueError(f"Unknown reward {kind!r}; choose one of {REWARDS}.")


def capped_rank_from_scores(
    scores: torch.Tensor, target: torch.Tensor, k: int, target_scores: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Number of real items (id >= 1, not the target) scoring above the target, capped at k; ``scores [M, N]``.

    ``target_scores`` defaults to the target's own column of ``scores``.
    """
    if target_scores is None:
        target_scores = scores.gather(1, target[:, None]).squeeze(1)
    above = scores > target_scores[:, None]
    above[:, 0] = False
    above.scatter_(1, target[:, None], False)
    return above.sum(dim=-1).clamp(max=k)


def _full_capped_rank(
    queries: torch.Tensor, item_table: torch.Tensor, target: torch.Tensor, target_scores: torch.Tensor, k: int, chunk: int
) -> torch.Tensor:
    """``capped_rank_from_scores`` for ``queries [M, d]`` against the whole table, ``chunk`` rows at a time."""
    ranks = [
        capped_rank_from_scores(
            queries[start : start + chunk] @ item_table.t(), target[start : start + chunk], k,
            target_scores[start : start + chunk],
        )
        for start in range(0, queries.size(0), chunk)
    ]
    return torch.cat(ranks) if ranks else target.new_zeros(0)


def k3_kl(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    """GRPO's per-token estimator of ``KL(pi || pi_ref)``: ``exp(ref - lp) - (ref - lp) - 1`` (>= 0, elementwise)."""
    delta = ref_log_prob - log_prob
    return torch.exp(delta) - delta - 1.0


@torch.no_grad()
def target_rank(
    actions: torch.Tensor,
    item_table: torch.Tensor,
    target: torch.Tensor,
    k: int,
    anchor_scores: Optional[torch.Tensor] = None,
    method: str = "pruned",
    n_candidates: int = 32,
    chunk: int = 4096,
) -> Tuple[torch.Tensor, float]:
    """Rank of the target among all items under each action, capped at ``k``; ``[B, G]`` and the share of
    actions that needed a full scan.

    ``pruned`` is exact: an action's rank is certainly >= k when at least k of the ``n_candidates`` items the
    anchor ranks highest already beat the target, which settles most actions with a ``[B, G, n_candidates]``
    product; only the rest are scored against the whole catalogue. It needs ``anchor_scores`` (``mu E^T``,
    which the recommendation loss computes anyway).
    """
    batch, group, dim = actions.shape
    target_rows = target.unsqueeze(1).expand(batch, group).reshape(-1)
    flat = actions.reshape(-1, dim)
    target_scores = (flat * item_table[target_rows]).sum(dim=-1)
    if method == "full" or anchor_scores is None:
        return _full_capped_rank(flat, item_table, target_rows, target_scores, k, chunk).view(batch, group), 1.0
    if method != "pruned":
        raise ValueError(f"Unknown rank method {method!r}; choose one of {RANK_METHODS}.")
    masked = anchor_scores.detach().clone()
    masked[:, 0] = -torch.inf
    masked.scatter_(1, target[:, None], -torch.inf)
    candidates = masked.topk(min(max(n_candidates, k), masked.size(1) - 2), dim=-1).indices  # [B, M]
    candidate_scores = torch.bmm(actions, item_table[candidates].transpose(1, 2))  # [B, G, M]
    beaten_by = (candidate_scores > target_scores.view(batch, group, 1)).sum(dim=-1).view(-1)
    capped = beaten_by.clamp(max=k)
    unsettled = (beaten_by < k).nonzero(as_tuple=True)[0]
    if unsettled.numel():
        capped[unsettled] = _full_capped_rank(
            flat[unsettled], item_table, target_rows[unsettled], target_scores[unsettled], k, chunk
        )
    return capped.view(batch, group), unsettled.numel() / max(flat.size(0), 1)
