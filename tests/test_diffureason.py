"""DiffuReasonSASRec as a RecBole model: shapes, losses, gradients, evaluation determinism and ablations."""

from __future__ import annotations

import pytest
import torch

import recbole_diffureason.model.diffureason as diffureason_module
from recbole_diffureason.registry import get_trainer
from tests.helpers import build, first_batch


def make(tiny_config, **overrides):
    return build("DiffuReasonSASRec", tiny_config, **overrides)


@pytest.fixture
def built(tiny_config):
    return make(tiny_config)


def test_shapes_of_losses_and_predictions(built):
    config, model, train_data, _, test_data = built
    batch = first_batch(train_data)
    losses = model.calculate_loss(batch)
    assert len(losses) == len(model.loss_names) == 6
    assert all(loss.dim() == 0 for loss in losses)
    model.eval()
    eval_batch = first_batch(test_data)
    with torch.no_grad():
        scores = model.full_sort_predict(eval_batch)
        assert scores.shape == (len(eval_batch), model.n_items)
        out = model(eval_batch)
        assert out.thoughts.shape == (len(eval_batch), config["reasoning_steps"], config["hidden_size"])
        items = eval_batch[model.ITEM_ID]
        assert torch.allclose(model.predict(eval_batch), scores.gather(1, items[:, None]).squeeze(1), atol=1e-5)


def test_every_part_gets_a_gradient(built):
    _, model, train_data, _, _ = built
    sum(model.calculate_loss(first_batch(train_data))).backward()
    for name in ("backbone.sasrec.item_embedding.weight", "backbone.sasrec.trm_encoder.layer.0.feed_forward.dense_1.weight",
                 "thinker.decoder.layers.0.multihead_attn.in_proj_weight", "pooling.proj.weight", "refiner.input_layer.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_backbone_is_recbole_sasrec(built, tiny_config):
    config, model, train_data, _, _ = built
    model.eval()
    batch = first_batch(train_data)
    seq, length = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    with torch.no_grad():
        _, padding, h_last = model.backbone(seq, length)
        assert torch.equal(h_last, model.backbone.sasrec(seq, length))
        assert torch.equal(padding, seq == 0)


def test_evaluation_is_deterministic_and_independent_of_batch_size(tiny_config):
    # The residual denoiser keeps the warm-start noise in its output, so unseeded noise would show here.
    tiny_config = dict(tiny_config, denoiser_output="residual")
    config, model, _, valid_data, _ = make(tiny_config)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    first = trainer.evaluate(valid_data, load_best_model=False)
    second = trainer.evaluate(valid_data, load_best_model=False)
    assert first == second
    config2, model2, _, valid_small, _ = make(tiny_config, eval_batch_size=7)
    model2.load_state_dict(model.state_dict())
    trainer2 = get_trainer(config2["MODEL_TYPE"], config2["model"])(config2, model2)
    assert trainer2.evaluate(valid_small, load_best_model=False) == first


def test_seeded_eval_noise_is_used_and_zero_noise_differs(tiny_config):
    _, model, _, _, test_data = make(tiny_config, denoiser_output="residual")
    model.eval()
    batch = first_batch(test_data)
    with torch.no_grad():
        seeded = model.full_sort_predict(batch)
        model.eval_init_noise = "zero"
        zero = model.full_sort_predict(batch)
        model.eval_init_noise, model.eval_noise_seed = "seeded", 99
        other_seed = model.full_sort_predict(batch)
    assert not torch.allclose(seeded, zero) and not torch.allclose(seeded, other_seed)


def test_noise_draw_averaging_is_deterministic(tiny_config):
    _, model, _, _, test_data = make(tiny_config, denoiser_output="residual", eval_noise_draws=3)
    model.eval()
    batch = first_batch(test_data)
    with torch.no_grad():
        assert torch.equal(model.full_sort_predict(batch), model.full_sort_predict(batch))


def test_sigma_is_within_its_clamp_after_training_steps(tiny_config):
    _, model, train_data, _, _ = make(tiny_config)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for batch in train_data:
        optimizer.zero_grad()
        sum(model.calculate_loss(batch)).backward()
        optimizer.step()
        sigma = model(batch).policy.sigma
        assert sigma.min() >= 1e-3 - 1e-9 and sigma.max() <= 1.0 + 1e-9


# ---------------------------------------------------------------- ablations (Table 3)
def test_wo_cot_has_no_thinking_decoder(tiny_config):
    _, model, train_data, _, _ = make(tiny_config, ablation="wo_cot")
    assert model.thinker.decoder is None and model.thinker.n_steps == 1
    model.calculate_loss(first_batch(train_data))


def test_wo_diffusion_uses_a_gaussian_head_on_c(tiny_config):
    _, model, train_data, _, _ = make(tiny_config, ablation="wo_diffusion")
    assert not hasattr(model, "refiner") and hasattr(model, "policy_head")
    model.eval()
    batch = first_batch(train_data)
    out = model(batch)
    assert torch.equal(out.policy.mu, out.cond)


def test_wo_rl_draws_no_samples(tiny_config, monkeypatch):
    _, model, train_data, _, _ = make(tiny_config, ablation="wo_rl")

    def forbidden(*args, **kwargs):
        raise AssertionError("samples drawn although beta = 0")

    monkeypatch.setattr(diffureason_module, "sample_actions", forbidden)
    losses = dict(zip(model.loss_names, model.calculate_loss(first_batch(train_data))))
    assert losses["align"] == 0 and losses["rec"] > 0


def test_wo_mse_drops_the_diffusion_loss(tiny_config):
    _, model, train_data, _, _ = make(tiny_config, ablation="wo_mse")
    losses = dict(zip(model.loss_names, model.calculate_loss(first_batch(train_data))))
    assert losses["diff"] == 0
    _, full, _, _, _ = make(tiny_config)
    assert dict(zip(full.loss_names, full.calculate_loss(first_batch(train_data))))["diff"] > 0


def test_wo_diffusion_rl_is_deterministic_mean_with_mse(tiny_config):
    config, model, train_data, _, _ = make(tiny_config, ablation="wo_diffusion_rl")
    assert config["use_diffusion"] is False and config["beta"] == 0.0 and config["alpha"] == 1.0
    losses = dict(zip(model.loss_names, model.calculate_loss(first_batch(train_data))))
    assert losses["align"] == 0 and losses["diff"] > 0


def test_with_kl_adds_a_kl_term_against_the_epoch_snapshot(tiny_config):
    _, model, train_data, _, _ = make(tiny_config, ablation="with_kl")
    model.on_epoch_start(0)
    batch = first_batch(train_data)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    optimizer.zero_grad()
    sum(model.calculate_loss(batch)).backward()
    optimizer.step()  # move away from the snapshot
    losses = dict(zip(model.loss_names, model.calculate_loss(batch)))
    assert losses["kl"] > 0


def test_two_stage_declares_two_stages_and_pretrain_skips_alignment(tiny_config, monkeypatch):
    _, model, train_data, _, _ = make(tiny_config, ablation="two_stage", stage1_epochs=3, epochs=4)
    assert model.training_stages() == [("pretrain", 3), ("finetune", 4)]
    model.set_training_stage("pretrain")
    monkeypatch.setattr(diffureason_module, "sample_actions", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert dict(zip(model.loss_names, model.calculate_loss(first_batch(train_data))))["align"] == 0


def test_rec_align_finetune_drops_mse(tiny_config):
    _, model, train_data, _, _ = make(tiny_config, ablation="two_stage", two_stage_finetune_loss="rec_align")
    model.set_training_stage("finetune")
    assert dict(zip(model.loss_names, model.calculate_loss(first_batch(train_data))))["diff"] == 0


def test_backbone_rec_weight_adds_a_backbone_term(tiny_config):
    _, model, train_data, _, _ = make(tiny_config, backbone_rec_weight=0.5)
    losses = dict(zip(model.loss_names, model.calculate_loss(first_batch(train_data))))
    assert losses["backbone_rec"] > 0


def test_thought_rec_weight_is_the_next_item_ce_of_each_later_thought(tiny_config):
    import torch.nn.functional as F

    _, model, train_data, _, _ = make(tiny_config, thought_rec_weight=0.5, reasoning_steps=3)
    batch = first_batch(train_data)
    model.eval()  # no dropout, no fresh noise: the thoughts of two forward passes agree
    losses = dict(zip(model.loss_names, model.calculate_loss(batch)))
    thoughts, target = model.forward(batch).thoughts, batch[model.POS_ITEM_ID]
    expected = 0.5 * (F.cross_entropy(model.score_all(thoughts[:, 1]), target)
                      + F.cross_entropy(model.score_all(thoughts[:, 2]), target)) / 2
    assert torch.allclose(losses["thought_rec"], expected, atol=1e-6)
    model.train()
    model.zero_grad()
    dict(zip(model.loss_names, model.calculate_loss(batch)))["thought_rec"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.thinker.parameters())


def test_thought_rec_weight_is_off_in_the_paper_and_zero_without_later_thoughts(tiny_config):
    _, paper, train_data, _, _ = make(tiny_config, preset="paper")
    batch = first_batch(train_data)
    assert dict(zip(paper.loss_names, paper.calculate_loss(batch)))["thought_rec"] == 0
    _, single, _, _, _ = make(tiny_config, thought_rec_weight=1.0, reasoning_steps=1)
    assert dict(zip(single.loss_names, single.calculate_loss(batch)))["thought_rec"] == 0


def test_reward_rank_methods_agree_inside_the_model(tiny_config):
    _, model, train_data, _, _ = make(tiny_config, reward_k=3)
    batch = first_batch(train_data)
    with torch.no_grad():
        mu = model(batch).policy.mu
        actions = mu[:, None] + 0.1 * torch.randn(mu.size(0), 4, mu.size(1))
        scores = model.score_all(mu)
        pruned = model.action_rewards(actions, scores, batch)
        model.reward_rank_method = "full"
        assert torch.equal(pruned, model.action_rewards(actions, scores, batch))
