"""A NaN or an infinity in training stops with an error that says where it came from."""

from __future__ import annotations

import pytest
import torch

from recbole_diffureason.quick_start import build_config, build_model, prepare_data
from recbole_diffureason.registry import get_trainer
from recbole_diffureason.trainer import NonFiniteTrainingError


def trainer_for(tiny_config, **overrides):
    # One stage, so that the first batch already carries every loss term and reaches every module.
    overrides = {"training_schedule": "end_to_end", **overrides}
    config = build_config("DiffuReasonSASRec", "tiny", config_dict={**tiny_config, **overrides}, cmd_args=[])
    _, train_data, valid_data, _ = prepare_data(config)
    model = build_model(config, train_data)
    return get_trainer(config["MODEL_TYPE"], config["model"])(config, model), train_data, valid_data


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_a_nan_loss_term_is_named_in_the_error(tiny_config):
    trainer, train_data, valid_data = trainer_for(tiny_config)
    original = trainer.model.calculate_loss

    def nan_diff(interaction):
        losses = dict(zip(trainer.model.loss_names, original(interaction)))
        losses["diff"] = losses["diff"] * float("nan")
        return tuple(losses.values())

    trainer.model.calculate_loss = nan_diff
    with pytest.raises(NonFiniteTrainingError, match=r"epoch 0, batch 0 \(rec=[0-9.]+, diff=nan") as error:
        trainer.fit(train_data, valid_data, saved=False)
    assert "clip_grad_norm" in str(error.value)


def test_an_infinite_loss_is_refused_too(tiny_config):
    """RecBole's own check only looks for NaN; an infinite loss would spoil the weights one step later."""
    trainer, train_data, valid_data = trainer_for(tiny_config)
    original = trainer.model.calculate_loss
    trainer.model.calculate_loss = lambda i: tuple(t * float("inf") if n == 0 else t for n, t in enumerate(original(i)))
    with pytest.raises(NonFiniteTrainingError, match="rec=inf"):
        trainer.fit(train_data, valid_data, saved=False)


def test_a_non_finite_gradient_names_the_parameter_and_leaves_the_weights_alone(tiny_config):
    trainer, train_data, valid_data = trainer_for(tiny_config, clip_grad_norm={"max_norm": 5.0})
    weight = trainer.model.refiner.time_mlp[0].weight
    weight.register_hook(lambda grad: grad * float("inf"))
    before = snapshot(trainer.model)
    with pytest.raises(NonFiniteTrainingError, match=r"refiner\.time_mlp\.0\.weight.*not updated.*Gradient clipping is on"):
        trainer.fit(train_data, valid_data, saved=False)
    after = snapshot(trainer.model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_the_guard_can_be_switched_off(tiny_config):
    trainer, train_data, valid_data = trainer_for(tiny_config, check_finite=False)
    weight = trainer.model.refiner.time_mlp[0].weight
    weight.register_hook(lambda grad: grad * float("nan"))
    with pytest.raises(ValueError, match="Training loss is nan") as error:  # RecBole's behaviour, one batch late
        trainer._train_epoch(train_data, 0)
    assert not isinstance(error.value, NonFiniteTrainingError)
    assert torch.isnan(weight).any()


def test_a_later_stage_optimizer_is_guarded_too(tiny_config):
    """Staged training (LARES SPT -> RPT, two-stage ablation) builds a fresh optimizer for each stage."""
    trainer, _, _ = trainer_for(tiny_config)
    optimizer = trainer._build_optimizer(params=trainer.model.parameters(), learning_rate=1e-3)
    weight = trainer.model.refiner.time_mlp[0].weight
    weight.grad = torch.full_like(weight, float("nan"))
    with pytest.raises(NonFiniteTrainingError, match=r"refiner\.time_mlp\.0\.weight"):
        optimizer.step()
