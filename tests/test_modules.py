"""The reusable parts: thinking tokens, pooling, diffusion refiner, noise and the GRPO alignment loss."""

from __future__ import annotations

import math

import pytest
import torch

from recbole_diffureason.modules.alignment import (
    clipped_surrogate_loss,
    diag_gaussian_kl,
    gaussian_log_prob,
    gaussian_policy_loss,
    group_advantages,
    rewards_from_rank,
    sample_actions,
    target_rank,
)
from recbole_diffureason.modules.refiner import (
    DiffusionRefiner,
    GaussianPolicyHead,
    bounded_sigma,
    cosine_alpha_bar,
    keyed_normal,
    sinusoidal_embedding,
)
from recbole_diffureason.modules.thinking import ThinkingTokens, build_pooling, heads_that_divide

B, L, D = 5, 7, 16


def memory():
    torch.manual_seed(0)
    states = torch.randn(B, L, D)
    padding = torch.zeros(B, L, dtype=torch.bool)
    padding[0, 3:] = True  # a short sequence, right-padded as in RecBole
    return states, padding, states[:, 2]


# ---------------------------------------------------------------- thinking tokens
def test_thoughts_shape_and_first_thought_is_h_last():
    states, padding, h_last = memory()
    thinker = ThinkingTokens(D, n_steps=3, n_heads=4)
    thoughts = thinker(states, padding, h_last)
    assert thoughts.shape == (B, 3, D)
    assert torch.equal(thoughts[:, 0], h_last)
    assert not torch.allclose(thoughts[:, 1], thoughts[:, 2])


def test_one_step_means_no_decoder_call():
    states, padding, h_last = memory()
    thinker = ThinkingTokens(D, n_steps=1)
    assert thinker.decoder is None
    assert torch.equal(thinker(states, padding, h_last), h_last.unsqueeze(1))


def test_padded_memory_positions_are_ignored():
    states, padding, h_last = memory()
    thinker = ThinkingTokens(D, n_steps=3, n_heads=4).eval()
    altered = states.clone()
    altered[0, 3:] = 100.0  # only padded slots of row 0 change
    assert torch.allclose(thinker(states, padding, h_last), thinker(altered, padding, h_last), atol=1e-6)


def test_last_context_sees_only_the_previous_thought():
    states, padding, h_last = memory()
    full = ThinkingTokens(D, n_steps=3, n_heads=4, context="full").eval()
    last = ThinkingTokens(D, n_steps=3, n_heads=4, context="last").eval()
    last.load_state_dict(full.state_dict())
    a, b = full(states, padding, h_last), last(states, padding, h_last)
    assert torch.allclose(a[:, 1], b[:, 1], atol=1e-6)  # step 2 has one previous thought either way
    assert not torch.allclose(a[:, 2], b[:, 2], atol=1e-4)


def test_post_ln_decoder_has_no_final_norm_and_other_outputs():
    states, padding, h_last = memory()
    pre = ThinkingTokens(D, n_steps=2, n_heads=4).eval()
    post = ThinkingTokens(D, n_steps=2, n_heads=4, norm_first=False).eval()
    assert pre.decoder.norm is not None and post.decoder.norm is None
    post.load_state_dict({k: v for k, v in pre.state_dict().items() if not k.startswith("decoder.norm")})
    assert not torch.allclose(pre(states, padding, h_last), post(states, padding, h_last))


def test_heads_fall_back_to_a_divisor_of_the_width():
    assert heads_that_divide(50, 8) == 5
    assert heads_that_divide(64, 8) == 8
    assert ThinkingTokens(50, n_steps=2, n_heads=8).decoder.layers[0].self_attn.num_heads == 5


@pytest.mark.parametrize("name", ["attention", "mean", "last"])
def test_pooling_returns_one_vector(name):
    thoughts = torch.randn(B, 3, D)
    pooled = build_pooling(name, D)(thoughts)
    assert pooled.shape == (B, D)
    if name == "last":
        assert torch.equal(pooled, thoughts[:, -1])
    if name == "mean":
        assert torch.allclose(pooled, thoughts.mean(1))


def test_attention_pooling_is_a_convex_combination():
    thoughts = torch.randn(B, 3, D)
    pooled = build_pooling("attention", D)(thoughts)
    lo, hi = thoughts.min(dim=1).values, thoughts.max(dim=1).values
    assert torch.all(pooled >= lo - 1e-6) and torch.all(pooled <= hi + 1e-6)


def test_unknown_pooling_is_rejected():
    with pytest.raises(ValueError, match="Unknown pooling"):
        build_pooling("max", D)


# ---------------------------------------------------------------- refiner
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


def test_keyed_noise_depends_on_the_key_only():
    keys = torch.arange(100)
    full = keyed_normal(keys, D, seed=3)
    assert torch.equal(keyed_normal(keys[[7, 2]], D, seed=3), full[[7, 2]])
    assert not torch.allclose(keyed_normal(keys, D, seed=4), full)
    big = keyed_normal(torch.arange(5000), 32, seed=0)
    assert abs(big.mean().item()) < 0.02 and abs(big.std().item() - 1) < 0.02


# ---------------------------------------------------------------- alignment
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
    assert mu.grad.abs().max() < 1e-6 and raw_sigma.grad.abs().max() < 1e-6  # spec 5.5.1


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
