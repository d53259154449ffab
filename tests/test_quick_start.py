"""End-to-end runs through quick_start.run: training, evaluation, results files, checkpoints and resume."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from recbole_diffureason import checkpoint
from recbole_diffureason.quick_start import build_config, build_model, load_data_and_model, prepare_data, run
from recbole_diffureason.registry import get_trainer


def test_diffureason_sasrec_trains_and_evaluates(tiny_config):
    result = run("DiffuReasonSASRec", "tiny", config_dict=tiny_config, cmd_args=[])
    assert set(result["best_valid_result"]) == {"recall@5", "recall@10", "ndcg@5", "ndcg@10"}
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0
    # The defaults train the backbone alone first (backbone_first), then the full model.
    stages = [h["stage"] for h in result["history"]]
    assert stages[0] == "backbone" and stages[-1] == "train" and sorted(stages) == stages
    epoch = result["history"][-1]
    assert set(epoch["losses"]) == {"rec", "diff", "align", "kl", "backbone_rec", "thought_rec"}
    assert epoch["losses"]["rec"] > 0 and epoch["train_seconds"] > 0
    assert "frac_groups_with_signal" in epoch["diagnostics"] and "sigma_mean" in epoch["diagnostics"]
    saved = json.loads(open(result["results_file"], encoding="utf-8").read())
    assert saved["test_result"] == result["test_result"] and saved["config"]["model"] == "DiffuReasonSASRec"


def test_recbole_builtin_runs_through_the_same_entry_point(tiny_config):
    config = dict(tiny_config, epochs=3)
    result = run("SASRec", "tiny", config_dict=config, cmd_args=[])
    assert result["model"] == "SASRec"
    assert result["test_result"] == recbole_own_run("SASRec", config)  # the plugin changes no number
    # Our trainer wrote the checkpoint, so it loads without unpickling any class.
    state = torch.load(result["saved_model_file"], weights_only=True)
    assert state["model_class"] == "SASRec"


def recbole_own_run(model: str, config_dict: dict) -> dict:
    """Test metrics of RecBole's own ``run_recbole`` steps (config, data, seeded model, Trainer), best epoch's weights."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.trainer import Trainer
    from recbole.utils import get_model, init_seed

    config = Config(model=model, dataset="tiny", config_dict={**config_dict, "train_neg_sample_args": None})
    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    recbole_model = get_model(model)(config, train_data.dataset).to(config["device"])
    torch.autograd.set_detect_anomaly(False)  # as build_model: RecBole's sine.py switches it on at import
    trainer = Trainer(config, recbole_model)
    best = {}
    trainer.fit(train_data, valid_data, saved=False, callback_fn=lambda epoch, score: best.update(
        {k: v.clone() for k, v in recbole_model.state_dict().items()} if score >= trainer.best_valid_score else {}))
    recbole_model.load_state_dict(best)
    return dict(trainer.evaluate(test_data, load_best_model=False))


def test_evaluate_test_false_never_scores_the_test_split(tiny_config):
    result = run("SASRec", "tiny", config_dict=tiny_config, cmd_args=[], evaluate_test=False)
    assert result["test_result"] is None and result["best_valid_result"]


def test_checkpoint_round_trip_gives_identical_scores(tiny_config):
    result = run("DiffuReasonSASRec", "tiny", config_dict=tiny_config, cmd_args=[])
    state = torch.load(result["saved_model_file"], map_location="cpu", weights_only=True)
    assert "config_dict" in state and "optimizer" in state

    config, model, _, _, _, test_data = load_data_and_model(result["saved_model_file"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    again = trainer.evaluate(test_data, load_best_model=False)
    assert dict(again) == dict(result["test_result"])

    model.eval()
    batch = next(iter(test_data))[0]
    with torch.no_grad():
        first = model.full_sort_predict(batch)
        model.load_state_dict(state["state_dict"])
        second = model.full_sort_predict(batch)
    assert torch.equal(first, second)


def test_a_checkpoint_saved_before_a_key_existed_loads_with_that_keys_default(tiny_config, tmp_path):
    result = run("DiffuReasonSASRec", "tiny", config_dict=tiny_config, cmd_args=[])
    state = torch.load(result["saved_model_file"], map_location="cpu", weights_only=True)
    del state["config_dict"]["eval_residual_scale"]  # as in a checkpoint written before the key was added
    older = tmp_path / "older.pth"
    torch.save(state, older)

    config, model, _, _, _, test_data = load_data_and_model(str(older))
    assert config["eval_residual_scale"] == 1.0 and model.eval_residual_scale == 1.0
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    assert dict(trainer.evaluate(test_data, load_best_model=False)) == dict(result["test_result"])


def test_recbole_pickled_checkpoints_are_refused_with_a_clear_message(tmp_path):
    legacy = tmp_path / "legacy.pth"
    torch.save({"config": argparse.Namespace(model="SASRec")}, legacy, pickle_protocol=4)  # as RecBole writes
    with pytest.raises(ValueError, match="weights_only=False"):
        checkpoint.load(legacy)


def test_resume_continues_exactly_where_training_stopped(tiny_config):
    # The defaults train in two stages (backbone_first): one backbone epoch, then the full model.
    straight = dict(tiny_config, epochs=2, stage1_epochs=1, saved_model_file="saved/straight.pth")
    full = run("DiffuReasonSASRec", "tiny", config_dict=straight, cmd_args=[])

    first = dict(tiny_config, epochs=1, stage1_epochs=1, saved_model_file="saved/resumed.pth", resume=True)
    interrupted = run("DiffuReasonSASRec", "tiny", config_dict=first, cmd_args=[])
    second = dict(first, epochs=2)
    resumed = run("DiffuReasonSASRec", "tiny", config_dict=second, cmd_args=[])

    assert [(h["stage"], h["epoch"]) for h in resumed["history"]] == [("backbone", 0), ("train", 0), ("train", 1)]
    # Both finished epochs were restored from the checkpoint, not trained again (their measured times are the old ones).
    assert [h["train_seconds"] for h in resumed["history"][:2]] == [h["train_seconds"] for h in interrupted["history"]]
    assert resumed["history"][2]["losses"] == pytest.approx(full["history"][2]["losses"], rel=1e-5, abs=1e-7)
    assert resumed["history"][2]["valid_result"] == full["history"][2]["valid_result"]
    assert resumed["test_result"] == full["test_result"]


def test_a_finished_run_resumes_to_the_same_result_without_training(tiny_config):
    config = dict(tiny_config, epochs=3, saved_model_file="saved/done.pth", resume=True)
    first = run("SASRec", "tiny", config_dict=config, cmd_args=[])
    best_before = torch.load(first["saved_model_file"], weights_only=True)["state_dict"]
    again = run("SASRec", "tiny", config_dict=config, cmd_args=[])
    best_after = torch.load(first["saved_model_file"], weights_only=True)["state_dict"]
    assert all(torch.equal(best_before[k], best_after[k]) for k in best_before)  # the best file is left alone
    assert again["test_result"] == first["test_result"]
    assert [h["train_seconds"] for h in again["history"]] == [h["train_seconds"] for h in first["history"]]


def test_two_stage_schedule_trains_both_stages(tiny_config):
    config = dict(tiny_config, ablation="two_stage", stage1_epochs=1, epochs=1)
    result = run("DiffuReasonSASRec", "tiny", config_dict=config, cmd_args=[])
    stages = [h["stage"] for h in result["history"]]
    assert stages == ["pretrain", "finetune"]
    pretrain, finetune = result["history"]
    assert pretrain["losses"]["align"] == 0.0
    assert "frac_groups_with_signal" not in pretrain["diagnostics"]
    assert "frac_groups_with_signal" in finetune["diagnostics"]


def test_backbone_first_schedule_trains_the_backbone_then_the_full_model_from_its_best_weights(tiny_config):
    config = dict(tiny_config, training_schedule="backbone_first", stage1_epochs=2, epochs=1)
    result = run("DiffuReasonSASRec", "tiny", config_dict=config, cmd_args=[])
    assert [h["stage"] for h in result["history"]] == ["backbone", "backbone", "train"]
    for epoch in result["history"][:2]:
        assert epoch["losses"]["rec"] == 0.0 and epoch["losses"]["backbone_rec"] > 0
        assert "frac_groups_with_signal" not in epoch["diagnostics"]
    assert result["history"][2]["losses"]["rec"] > 0
    assert "frac_groups_with_signal" in result["history"][2]["diagnostics"]


def test_interrupted_two_stage_run_with_kl_keeps_the_stage1_reference(tiny_config):
    # The fine-tuning KL is taken against the stage-1 model; a resume in fine-tuning must keep that reference
    # (saved in the checkpoint), not freeze the weights it resumed from.
    base = dict(tiny_config, ablation="two_stage", kl_weight=0.5, stage1_epochs=1)
    full = run("DiffuReasonSASRec", "tiny", config_dict=dict(base, epochs=3, saved_model_file="saved/straight.pth"),
               cmd_args=[])
    first = dict(base, epochs=1, saved_model_file="saved/resumed.pth", resume=True)
    run("DiffuReasonSASRec", "tiny", config_dict=first, cmd_args=[])
    resumed = run("DiffuReasonSASRec", "tiny", config_dict=dict(first, epochs=3), cmd_args=[])

    assert [h["stage"] for h in resumed["history"]] == ["pretrain", "finetune", "finetune", "finetune"]
    assert resumed["history"][2]["losses"]["kl"] > 0
    for resumed_epoch, full_epoch in zip(resumed["history"][2:], full["history"][2:]):
        assert resumed_epoch["losses"] == pytest.approx(full_epoch["losses"], rel=1e-5, abs=1e-7)
        assert resumed_epoch["valid_result"] == full_epoch["valid_result"]
    assert resumed["test_result"] == full["test_result"]


def test_model_built_twice_with_the_same_seed_is_identical(tiny_config):
    config = build_config("DiffuReasonSASRec", "tiny", config_dict=tiny_config, cmd_args=[])
    _, train_data, _, _ = prepare_data(config)
    a, b = build_model(config, train_data), build_model(config, train_data)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name
