"""GRPO: group advantages, the clipped surrogate for the Gaussian and the discrete policy, rewards from ranks, KL terms."""

from __future__ import annotations

import math

import pytest
import torch

from recbole_diffureason.modules.grpo import (
    capped_rank_from_scores,
    clipped_surrogate_loss,
    diag_gaussian_kl,
    gaussian_log_prob,
    gaussian_policy_loss,
    group_advantages,
    k3_kl,
    rewards_from_rank,
    sample_actions,
    target_rank,
)
from recbole_diffureason.modules.refiner import bounded_sigma

B, D = 5, 16


def test_equal_rewards_give_zero_advantage():
    rewards = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    adv = group_advantages(rewards, eps=1e-4)
    assert torch.equal(adv[:2], torch.zeros(2, 4))
    assert adv[2, 1] > 0 and torch.all(adv[2, [0, 2, 3]] < 0)
    assert adv[2].sum().abs() < 1e-5


def test_one_hit_in_eight_matches_the_spec_worked_example():
    rewards = torch.zeros(1, 8)
    rewards[0, 0] = 1.0
    adv = group_advantages(rewards, eps=1e-4)
    assert adv[0, 0].item() == pytest.approx(2.47, abs=0.01)
    assert adv[0, 1].item() == pytest.approx(-0.354, abs=0.001)


def mixed_policy():
    torch.manual_seed(0)
    mu = torch.randn(4, D, requires_grad=True)
    raw_sigma = torch.zeros(4, D, requires_grad=True)
    sigma = bounded_sigma(raw_sigma, 1e-3, 1.0, 1e-5)
    rewards = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1]])
    return mu, raw_sigma, sigma, rewards


def test_detached_samples_give_mu_a_gradient():
    mu, raw_sigma, sigma, rewards = mixed_policy()
    actions = sample_actions(mu, sigma, 4, detach=True)
    loss, stats = gaussian_policy_loss(mu, sigma, actions, rewards)
    loss.backward()
    assert mu.grad.abs().sum() > 1e-3 and raw_sigma.grad.abs().sum() > 1e-3
    assert stats["frac_groups_with_signal"] == 1.0


def test_attached_samples_make_the_alignment_loss_a_no_op():
    mu, raw_sigma, sigma, rewards = mixed_policy()
    actions = sample_actions(mu, sigma, 4, detach=False)
    loss, _ = gaussian_policy_loss(mu, sigma, actions, rewards)
    loss.backward()
    assert mu.grad.abs().max() < 1e-6 and raw_sigma.grad.abs().max() < 1e-6  # docs/design.md 5.5.1


def test_detached_gradient_moves_mu_toward_rewarded_samples():
    mu = torch.zeros(1, D, requires_grad=True)
    sigma = torch.full((1, D), 0.5)
    actions = torch.stack([torch.ones(D), -torch.ones(D)]).unsqueeze(0)  # [1, 2, D]
    loss, _ = gaussian_policy_loss(mu, sigma, actions, torch.tensor([[1.0, 0.0]]))
    loss.backward()
    assert torch.all(mu.grad < 0)  # a gradient step increases mu, toward the rewarded +1 sample


def test_ratio_is_one_so_the_clip_is_inert():
    log_prob = torch.randn(3, 4, requires_grad=True)
    adv = torch.randn(3, 4)
    for clip in (0.0, 0.2, 10.0):
        loss = clipped_surrogate_loss(log_prob, log_prob.detach(), adv, clip)
        assert loss.item() == pytest.approx(-adv.mean().item(), abs=1e-6)


def test_log_prob_sums_over_dimensions():
    mu, sigma = torch.zeros(1, 3), torch.full((1, 3), 2.0)
    z = torch.tensor([[[2.0, 0.0, 0.0]]])
    expected = -0.5 * (1.0 + 3 * 2 * math.log(2.0))
    assert gaussian_log_prob(z, mu, sigma).item() == pytest.approx(expected)


def test_kl_is_zero_for_identical_policies_and_positive_otherwise():
    mu, sigma = torch.randn(3, D), torch.rand(3, D) + 0.1
    assert torch.allclose(diag_gaussian_kl(mu, sigma, mu, sigma), torch.zeros(3), atol=1e-6)
    assert torch.all(diag_gaussian_kl(mu + 1, sigma, mu, sigma) > 0)


def test_rewards_from_rank():
    rank = torch.tensor([0, 1, 4, 5])
    assert rewards_from_rank(rank, "hit", 1).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert rewards_from_rank(rank, "hit", 5).tolist() == [1.0, 1.0, 1.0, 0.0]
    ndcg = rewards_from_rank(rank, "ndcg", 5)
    assert ndcg[0] == 1.0 and ndcg[1] == pytest.approx(1 / math.log2(3)) and ndcg[3] == 0.0


def test_rank_ignores_padding_and_counts_better_items():
    table = torch.tensor([[100.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])  # row 0 = padding
    actions = torch.tensor([[[1.0, 0.0]]])
    for target, expected in ((3, 0), (2, 1), (1, 2)):
        rank, _ = target_rank(actions, table, torch.tensor([target]), k=10, method="full")
        assert rank.item() == expected


@pytest.mark.parametrize("k", [1, 3, 10])
def test_pruned_rank_equals_full_rank(k):
    torch.manual_seed(k)
    table = torch.randn(200, 8)
    target = torch.randint(1, 200, (32,))
    mu = torch.randn(32, 8)
    mu[:16] = table[target[:16]] * 3  # half the anchors sit on their target, so hits happen
    actions = mu[:, None] + 0.5 * torch.randn(32, 6, 8)
    full, share_full = target_rank(actions, table, target, k, method="full")
    pruned, share = target_rank(actions, table, target, k, anchor_scores=mu @ table.T, n_candidates=5)
    assert torch.equal(full, pruned)
    assert share_full == 1.0 and share < 1.0
    assert (full == 0).any() and (full == k).any()


def test_capped_rank_from_scores_agrees_with_target_rank():
    torch.manual_seed(6)
    target = torch.tensor([1, 5, 29, 7])
    table, queries = torch.randn(30, D), torch.randn(len(target), 3, D)
    scores = queries @ table.t()
    ranks = capped_rank_from_scores(scores.reshape(-1, 30), target.repeat_interleave(3), k=10).view(-1, 3)
    expected, _ = target_rank(queries, table, target, k=10, method="full")
    assert torch.equal(ranks, expected)
    scores[:, :, 0] = 1e9  # the padding column never counts
    again = capped_rank_from_scores(scores.reshape(-1, 30), target.repeat_interleave(3), k=10).view(-1, 3)
    assert torch.equal(again, ranks)


def test_k3_kl_is_zero_at_the_reference_and_positive_elsewhere():
    lp = torch.tensor([-1.0, -2.0, -0.5])
    assert torch.equal(k3_kl(lp, lp), torch.zeros(3))
    assert (k3_kl(lp, lp - 0.3) > 0).all() and (k3_kl(lp, lp + 0.3) > 0).all()


def test_natural_gradient_is_the_score_gradient_preconditioned_by_the_fisher_information():
    torch.manual_seed(3)
    mu = torch.randn(3, 6, requires_grad=True)
    raw_sigma = torch.rand(3, 6) * 0.5 + 0.05
    sigma = raw_sigma.clone().requires_grad_(True)
    z = sample_actions(mu, sigma, 4)
    rewards = torch.tensor([[1.0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]])
    score, _ = gaussian_policy_loss(mu, sigma, z, rewards)
    grad_mu, grad_sigma = torch.autograd.grad(score, (mu, sigma))
    natural, _ = gaussian_policy_loss(mu, sigma, z, rewards, gradient="natural")
    nat_mu, nat_sigma = torch.autograd.grad(natural, (mu, sigma))
    assert torch.allclose(nat_mu, grad_mu * sigma.detach() ** 2, atol=1e-6)
    assert torch.allclose(nat_sigma, grad_sigma * sigma.detach() ** 2 / 2, atol=1e-6)
    with pytest.raises(ValueError, match="gradient must be one of"):
        gaussian_policy_loss(mu, sigma, z, rewards, gradient="fisher")
