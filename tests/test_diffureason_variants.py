"""DiffuReasonSASRec's named deviations from the paper, its ``preset: paper`` and its diagnosis switch."""

from __future__ import annotations

import pytest
import torch

from recbole_diffureason.config import DRConfig, properties_dir, read_yaml
from recbole_diffureason.model.diffureason import (ABLATIONS, ANCHOR_COS_NATURAL, COND_RESIDUAL_AUX, PAPER, RECOMMENDED,
                                                   SUPERVISED_THOUGHTS)
from recbole_diffureason.quick_start import build_model
from recbole_diffureason.registry import get_trainer
from tests.helpers import build, first_batch


def make(tiny_config, **overrides):
    return build("DiffuReasonSASRec", tiny_config, **overrides)


# ---------------------------------------------------------------- preset: paper
def test_paper_preset_covers_every_reasoning_key_and_undoes_every_deviation_of_the_defaults(data_root, workdir):
    yaml_values = read_yaml(properties_dir() / "model" / "DiffuReasonSASRec.yaml")
    backbone = {"n_layers", "n_heads", "hidden_size", "inner_size", "hidden_dropout_prob", "attn_dropout_prob",
                "hidden_act", "layer_norm_eps", "initializer_range", "loss_type"}
    not_method = {"preset", "ablation", "diagnose", "diagnose_every", "reward_rank_method", "reward_candidates",
                  "stage1_epochs"}  # selectors, logging and exact speed-ups that change no number
    assert set(PAPER) == set(yaml_values) - backbone - not_method
    config = DRConfig("DiffuReasonSASRec", "tiny", config_dict={"data_path": str(data_root), "preset": "paper"},
                      cmd_args=[])
    for key, value in PAPER.items():
        assert config[key] == value, key
    # The defaults are the recommended configuration: the paper's with a few named deviations, which the preset undoes.
    assert {k: yaml_values[k] for k in PAPER} == RECOMMENDED
    assert {k for k in PAPER if PAPER[k] != RECOMMENDED[k]} == {
        "denoiser_output", "denoiser_zero_init", "diff_loss", "align_gradient", "training_schedule",
        "backbone_rec_weight"}


def test_anchor_cos_natural_preset_is_the_earlier_defaults_trained_end_to_end(data_root, workdir):
    assert {k for k in PAPER if PAPER[k] != ANCHOR_COS_NATURAL[k]} == {
        "denoiser_output", "denoiser_zero_init", "diff_loss", "align_gradient"}
    assert {k for k in RECOMMENDED if RECOMMENDED[k] != ANCHOR_COS_NATURAL[k]} == {
        "training_schedule", "backbone_rec_weight"}
    config = DRConfig("DiffuReasonSASRec", "tiny", config_dict={"data_path": str(data_root),
                                                                 "preset": "anchor_cos_natural"}, cmd_args=[])
    assert config["training_schedule"] == "end_to_end" and config["backbone_rec_weight"] == 0.0
    assert config["denoiser_output"] == "anchor_residual" and config["align_gradient"] == "natural"


def test_recommended_preset_is_the_defaults_and_explicit_keys_still_win(data_root, workdir):
    base = {"data_path": str(data_root)}
    defaults = DRConfig("DiffuReasonSASRec", "tiny", config_dict=base, cmd_args=[])
    recommended = DRConfig("DiffuReasonSASRec", "tiny", config_dict={**base, "preset": "recommended"}, cmd_args=[])
    for key, value in RECOMMENDED.items():
        assert defaults[key] == recommended[key] == value, key
    config = DRConfig("DiffuReasonSASRec", "tiny", cmd_args=["--preset=recommended", "--diff_loss=mse"],
                      config_dict=base)
    assert config["diff_loss"] == "mse" and config["denoiser_output"] == "anchor_residual"


def test_cond_residual_aux_preset_is_the_paper_with_the_residual_condition_and_the_backbone_ce(data_root, workdir):
    assert {k for k in PAPER if PAPER[k] != COND_RESIDUAL_AUX[k]} == {
        "denoiser_output", "denoiser_zero_init", "backbone_rec_weight"}
    config = DRConfig("DiffuReasonSASRec", "tiny", cmd_args=["--preset=cond_residual_aux", "--beta=0.5"],
                      config_dict={"data_path": str(data_root)})
    for key, value in COND_RESIDUAL_AUX.items():
        assert config[key] == (0.5 if key == "beta" else value), key
    assert config["denoiser_output"] == "cond_residual" and config["backbone_rec_weight"] == 1.0
    # it differs from the defaults also where the paper does: the MSE diffusion loss and the plain GRPO gradient
    assert config["diff_loss"] == "mse" != RECOMMENDED["diff_loss"]


def test_supervised_thoughts_preset_is_the_defaults_with_each_thought_trained_and_the_steps_scored(data_root, workdir):
    assert {k for k in RECOMMENDED if RECOMMENDED[k] != SUPERVISED_THOUGHTS[k]} == {
        "reasoning_steps", "thought_rec_weight", "eval_latent"}
    config = DRConfig("DiffuReasonSASRec", "tiny", cmd_args=["--preset=supervised_thoughts", "--reasoning_steps=3"],
                      config_dict={"data_path": str(data_root)})
    assert config["thought_rec_weight"] == 1.0 and config["eval_latent"] == "steps_mean"
    assert config["training_schedule"] == "backbone_first" and config["reasoning_steps"] == 3


def test_keys_given_explicitly_win_over_the_preset_but_not_over_an_ablation(data_root, workdir):
    base = {"data_path": str(data_root), "preset": "paper"}
    config = DRConfig("DiffuReasonSASRec", "tiny", config_dict={**base, "alpha": 0.25}, cmd_args=[])
    assert config["alpha"] == 0.25 and config["beta"] == PAPER["beta"]
    config = DRConfig("DiffuReasonSASRec", "tiny", config_dict={**base, "ablation": "wo_rl"}, cmd_args=[])
    assert config["beta"] == ABLATIONS["wo_rl"]["beta"] == 0.0  # the ablation row is applied after the preset


def test_unknown_preset_is_rejected(data_root, workdir):
    from recbole_diffureason.keys import ConfigError

    with pytest.raises(ConfigError, match="'preset' is 'papers', but must be one of 'paper', 'recommended', "
                                          "'cond_residual_aux', 'anchor_cos_natural', 'supervised_thoughts'"):
        DRConfig("DiffuReasonSASRec", "tiny", config_dict={"data_path": str(data_root), "preset": "papers"},
                 cmd_args=[])


# ---------------------------------------------------------------- anchor residual
@pytest.mark.parametrize("reasoning_init", ["pytorch", "recbole"])  # RecBole's init must not undo the zero output
def test_zero_initialised_anchor_residual_scores_exactly_as_sasrec_before_training(tiny_config, reasoning_init):
    config, model, train_data, _, test_data = make(tiny_config, denoiser_output="anchor_residual",
                                                   denoiser_zero_init=True, reasoning_init=reasoning_init)
    sasrec_config = DRConfig("SASRec", "tiny", config_dict=tiny_config, cmd_args=[])
    sasrec = build_model(sasrec_config, train_data)  # same seed: the backbone is built first, so same weights
    assert torch.equal(sasrec.item_embedding.weight, model.backbone.sasrec.item_embedding.weight)
    model.eval()
    sasrec.eval()
    batch = first_batch(test_data)
    with torch.no_grad():
        assert torch.equal(model.full_sort_predict(batch), sasrec.full_sort_predict(batch))


def test_residual_thoughts_are_the_backbone_prediction_before_training(tiny_config):
    _, model, train_data, _, test_data = make(tiny_config, think_output="residual", thought_rec_weight=1.0,
                                              backbone_rec_weight=1.0, reasoning_init="recbole")
    losses = dict(zip(model.loss_names, model.calculate_loss(first_batch(train_data))))
    assert torch.allclose(losses["thought_rec"], losses["backbone_rec"])  # every thought is h_L, so both CEs agree
    model.eval()
    with torch.no_grad():
        thoughts = model(first_batch(test_data)).thoughts
    assert torch.equal(thoughts[:, 1], thoughts[:, 0]) and torch.equal(thoughts[:, 2], thoughts[:, 0])
    with pytest.raises(ValueError, match="think_output"):
        make(tiny_config, think_output="resid")


def test_anchor_residual_learns_a_correction_and_needs_its_anchor(tiny_config):
    _, model, train_data, _, _ = make(tiny_config, denoiser_output="anchor_residual", denoiser_zero_init=True)
    sum(model.calculate_loss(first_batch(train_data))).backward()
    last = model.refiner.body[-1].weight
    assert last.grad[: model.hidden_size].abs().sum() > 0  # the zero half is trained
    with pytest.raises(ValueError, match="needs the anchor"):
        model.refiner(torch.zeros(2, model.hidden_size), torch.zeros(2, model.hidden_size), sample_intermediate=False)


def test_eval_latent_backbone_scores_the_backbones_h_last_and_mu_is_the_default(tiny_config):
    _, model, _, _, test_data = make(tiny_config, denoiser_output="anchor_residual", denoiser_zero_init=True)
    with torch.no_grad():
        model.refiner.body[-1].weight.normal_()  # as after training: the residual is no longer zero
    model.eval()
    batch = first_batch(test_data)
    with torch.no_grad():
        refined = model.full_sort_predict(batch)
        h_last = model.encode(batch)[2]
        model.eval_latent = "backbone"
        backbone = model.full_sort_predict(batch)
    assert torch.equal(backbone, model.score_all(h_last))
    assert not torch.allclose(backbone, refined)
    _, default, _, _, _ = make(tiny_config)
    assert default.eval_latent == "mu"


def test_eval_latent_steps_mean_scores_the_mean_of_the_thoughts_and_mu_as_their_mean_score(tiny_config):
    _, model, _, _, test_data = make(tiny_config, thought_rec_weight=1.0)
    with torch.no_grad():
        model.refiner.body[-1].weight.normal_()  # as after training: mu differs from h_L
    model.eval()
    batch = first_batch(test_data)
    with torch.no_grad():
        out = model.forward(batch)
        steps = [out.thoughts[:, r] for r in range(out.thoughts.size(1))] + [out.policy.mu]
        model.eval_latent = "steps_mean"
        scores = model.full_sort_predict(batch)
    mean_score = torch.stack([model.score_all(z) for z in steps]).mean(0)
    assert torch.allclose(scores, mean_score, atol=1e-5)  # tied embeddings: the mean latent is the mean score
    assert not torch.allclose(scores, model.score_all(out.policy.mu))


def test_eval_residual_scale_moves_the_scored_latent_along_the_reasoning_shift(tiny_config):
    _, model, _, _, test_data = make(tiny_config, denoiser_output="anchor_residual", denoiser_zero_init=True)
    with torch.no_grad():
        model.refiner.body[-1].weight.normal_()  # as after training: mu differs from h_L
    model.eval()
    batch = first_batch(test_data)
    with torch.no_grad():
        mu = model.forward(batch).policy.mu
        h_last = model.encode(batch)[2]
        scores = {}
        for scale in (0.0, 1.0, 2.5):
            model.eval_residual_scale = scale
            scores[scale] = model.full_sort_predict(batch)
        model.eval_latent = "backbone"
        backbone = model.full_sort_predict(batch)
    assert torch.equal(scores[1.0], model.score_all(mu))
    assert torch.allclose(scores[0.0], backbone, atol=1e-5)
    assert torch.allclose(scores[2.5], model.score_all(h_last + 2.5 * (mu - h_last)), atol=1e-5)
    assert not torch.allclose(scores[2.5], scores[1.0])
    _, default, _, _, _ = make(tiny_config)
    assert default.eval_residual_scale == 1.0


def test_a_negative_eval_residual_scale_is_refused(data_root, workdir):
    from recbole_diffureason.keys import ConfigError

    with pytest.raises(ConfigError, match="eval_residual_scale"):
        DRConfig("DiffuReasonSASRec", "tiny", config_dict={"data_path": str(data_root), "eval_residual_scale": -1.0},
                 cmd_args=[])


def test_an_unknown_eval_latent_is_refused_with_the_choices(data_root, workdir):
    from recbole_diffureason.keys import ConfigError

    with pytest.raises(ConfigError, match="'eval_latent' is 'h_L', but must be one of 'mu', 'backbone', 'steps_mean'"):
        DRConfig("DiffuReasonSASRec", "tiny", config_dict={"data_path": str(data_root), "eval_latent": "h_L"},
                 cmd_args=[])


# ---------------------------------------------------------------- relative warm-start noise
@pytest.mark.parametrize("scale", [1.0, 0.3])
def test_relative_warm_start_noise_has_the_thoughts_norm(tiny_config, scale):
    _, model, train_data, _, _ = make(tiny_config, init_noise_relative=True, init_noise_scale=scale,
                                      hidden_size=64, inner_size=64)
    thought = torch.randn(4000, 64) * 7.0
    noise = model.warm_start_noise(torch.randn(4000, 64) * scale, thought)
    ratio = (noise.norm(dim=-1) / thought.norm(dim=-1)).mean()
    assert ratio == pytest.approx(scale, rel=0.05)
    _, paper, _, _, _ = make(tiny_config)
    unit = torch.randn(3, 16)
    assert torch.equal(paper.warm_start_noise(unit, thought[:3, :16]), unit)  # the paper adds unit noise


# ---------------------------------------------------------------- per-module learning rate
def test_reasoning_modules_get_their_own_learning_rate(tiny_config):
    config, model, *_ = make(tiny_config, reasoning_learning_rate=0.01, learning_rate=0.001)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    backbone, reasoning = trainer.optimizer.param_groups
    assert backbone["lr"] == 0.001 and reasoning["lr"] == 0.01
    assert {id(p) for p in reasoning["params"]} == {id(p) for p in model.reasoning_parameters()}
    assert len(backbone["params"]) + len(reasoning["params"]) == len(list(model.parameters()))
    config, model, *_ = make(tiny_config)
    assert len(get_trainer(config["MODEL_TYPE"], config["model"])(config, model).optimizer.param_groups) == 1


# ---------------------------------------------------------------- diagnosis
def test_diagnosis_logs_the_fit_and_gradients_without_changing_the_losses(tiny_config):
    _, plain, train_data, _, _ = make(tiny_config)
    batch = first_batch(train_data)
    torch.manual_seed(5)
    expected = plain.calculate_loss(batch)
    _, diagnosed, _, _, _ = make(tiny_config, diagnose=True, diagnose_every=1)
    torch.manual_seed(5)
    losses = diagnosed.calculate_loss(batch)
    assert all(torch.equal(a, b) for a, b in zip(expected, losses))
    stats = diagnosed.pop_diagnostics()
    for key in ("ce_h_last", "norm_h_last", "norm_tau_R", "norm_c", "norm_target", "noise_to_thought",
                "grad_backbone_rec", "grad_backbone_diff", "inv_sigma", "cos_mu_h_last"):
        assert key in stats and stats[key] == stats[key], key  # present and not NaN
    assert stats["noise_to_thought"] > 0 and stats["grad_backbone_rec"] > 0
    assert all(p.grad is None for p in diagnosed.parameters())  # diagnosis never accumulates gradients


# ---------------------------------------------------------------- backbone_checkpoint
@pytest.fixture
def trained_sasrec(tiny_config, tmp_path):
    """A SASRec trained one epoch on the tiny dataset through the plugin, and its checkpoint."""
    from recbole_diffureason.quick_start import run

    path = tmp_path / "SASRec.pth"
    run("SASRec", "tiny", config_dict={**tiny_config, "saved_model_file": str(path)}, evaluate_test=False)
    return path


def test_backbone_checkpoint_starts_from_the_trained_sasrec_and_scores_as_it_before_training(tiny_config, trained_sasrec):
    from recbole_diffureason import checkpoint

    _, model, train_data, _, test_data = make(tiny_config, backbone_checkpoint=str(trained_sasrec))
    state = checkpoint.load(trained_sasrec)
    for name, tensor in state["state_dict"].items():
        assert torch.equal(model.backbone.sasrec.state_dict()[name], tensor), name
    sasrec = build_model(DRConfig("SASRec", "tiny", config_dict=tiny_config, cmd_args=[]), train_data)
    sasrec.load_state_dict(state["state_dict"])
    model.eval()
    sasrec.eval()
    batch = first_batch(test_data)
    with torch.no_grad():  # the defaults' zero-initialised anchor residual: exactly the loaded SASRec's scores
        assert torch.equal(model.full_sort_predict(batch), sasrec.full_sort_predict(batch))
    _, scratch, _, _, _ = make(tiny_config)  # same seed, from scratch: the reasoning modules start the same
    for name, tensor in scratch.thinker.state_dict().items():
        assert torch.equal(model.thinker.state_dict()[name], tensor), name
    assert not torch.equal(scratch.backbone.sasrec.item_embedding.weight, model.backbone.sasrec.item_embedding.weight)


def test_backbone_checkpoint_refuses_a_missing_file_another_model_and_other_sizes(tiny_config, trained_sasrec, tmp_path):
    from recbole_diffureason.checkpoint import CheckpointError
    from recbole_diffureason.keys import ConfigError

    with pytest.raises(ConfigError, match="does not exist: give the .pth file a SASRec run wrote"):
        make(tiny_config, backbone_checkpoint=str(tmp_path / "nope.pth"))
    with pytest.raises(CheckpointError, match="does not fit model SASRec as configured now"):
        make(tiny_config, backbone_checkpoint=str(trained_sasrec), hidden_size=16, inner_size=16)
    state = torch.load(trained_sasrec, weights_only=True)
    state["model_class"] = "DiffuReasonSASRec"
    other = tmp_path / "dr.pth"
    torch.save(state, other)
    with pytest.raises(ConfigError, match="holds a DiffuReasonSASRec checkpoint; it must be a SASRec one"):
        make(tiny_config, backbone_checkpoint=str(other))


# ---------------------------------------------------------------- training_schedule: backbone_first
def test_backbone_first_stage_trains_the_backbone_alone_with_sasrecs_loss_and_scores(tiny_config):
    # The paper's refinement, so that mu differs from h_L (the defaults' zero-initialised residual makes them equal).
    _, model, train_data, _, test_data = make(tiny_config, preset="paper", training_schedule="backbone_first",
                                              stage1_epochs=3, epochs=4)
    assert model.training_stages() == [("backbone", 3), ("train", 4)]
    sasrec = build_model(DRConfig("SASRec", "tiny", config_dict=tiny_config, cmd_args=[]), train_data)
    sasrec.load_state_dict(model.backbone.sasrec.state_dict())
    model.set_training_stage("backbone")
    model.train()
    sasrec.train()
    batch = first_batch(train_data)
    torch.manual_seed(7)
    expected = sasrec.calculate_loss(batch)
    torch.manual_seed(7)  # the same dropout masks, because the stage draws no other random number
    losses = dict(zip(model.loss_names, model.calculate_loss(batch)))
    assert torch.equal(losses["backbone_rec"], expected)
    assert all(losses[name] == 0 for name in ("rec", "diff", "align", "kl", "thought_rec"))
    sum(losses.values()).backward()
    assert all(p.grad is None for p in model.reasoning_parameters())
    assert [id(p) for p in model.parameter_groups()] == [id(p) for p in model.backbone_parameters()]
    model.eval()
    sasrec.eval()
    eval_batch = first_batch(test_data)
    with torch.no_grad():  # early stopping in this stage judges the backbone, not the untrained reasoning path
        assert torch.equal(model.full_sort_predict(eval_batch), sasrec.full_sort_predict(eval_batch))
        model.set_training_stage("train")
        assert not torch.equal(model.full_sort_predict(eval_batch), sasrec.full_sort_predict(eval_batch))


def test_supervised_thoughts_with_a_checkpoint_trains_as_the_warm_start_row_it_was_measured_as(tiny_config,
                                                                                                trained_sasrec):
    # README reports preset supervised_thoughts by the warm-start benchmark row: the earlier defaults trained end to
    # end from the checkpoint, with the backbone CE, 5 supervised thoughts and the mean of the steps.
    warm_row = {"preset": "anchor_cos_natural", "backbone_rec_weight": 1.0, "thought_rec_weight": 1.0,
                "eval_latent": "steps_mean", "reasoning_steps": 5}
    models = []
    for overrides in ({"preset": "supervised_thoughts"}, warm_row):
        _, model, train_data, _, _ = make(tiny_config, backbone_checkpoint=str(trained_sasrec), **overrides)
        assert [name for name, _ in model.training_stages()] == ["train"]
        model.set_training_stage("train")
        models.append(model)
    batch = first_batch(train_data)
    losses = []
    for model in models:
        model.train()
        torch.manual_seed(7)
        losses.append(model.calculate_loss(batch))
    assert len(losses[0]) == len(losses[1])
    for ours, row in zip(*losses):
        assert torch.equal(ours, row)


def test_backbone_first_skips_its_backbone_stage_when_a_trained_backbone_is_loaded(tiny_config, trained_sasrec):
    _, loaded, _, _, _ = make(tiny_config, training_schedule="backbone_first", backbone_checkpoint=str(trained_sasrec))
    assert [name for name, _ in loaded.training_stages()] == ["train"]
    _, fresh, _, _, _ = make(tiny_config, training_schedule="backbone_first")
    assert [name for name, _ in fresh.training_stages()] == ["backbone", "train"]
