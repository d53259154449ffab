"""RecBole's own functions, called directly, with plugin models and the checkpoints the plugin writes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import recbole_diffureason  # noqa: F401 - registers the plugin with RecBole
from recbole_diffureason import recbole_api
from recbole_diffureason.model.diffureason_sasrec import DiffuReasonSASRec
from recbole_diffureason.quick_start import run


def test_recbole_get_model_finds_plugin_models_first():
    import recbole.quick_start.quick_start as recbole_quick_start
    import recbole.utils
    import recbole.utils.utils
    from recbole.model.sequential_recommender import SASRec

    for get_model in (recbole.utils.get_model, recbole.utils.utils.get_model, recbole_quick_start.get_model):
        assert get_model("DiffuReasonSASRec") is DiffuReasonSASRec
        assert get_model("SASRec") is SASRec  # RecBole's own names are RecBole's answer


def test_recbole_get_model_unknown_name_is_a_value_error_not_lightgbm():
    from recbole.utils import get_model

    with pytest.raises(ValueError) as err:  # RecBole's own lookup ended in ModuleNotFoundError: lightgbm
        get_model("DifuReasonSASRec")
    assert not isinstance(err.value, ImportError)
    assert "Did you mean DiffuReasonSASRec" in str(err.value)


def test_registration_is_idempotent():
    import recbole.utils

    before = recbole.utils.get_model
    recbole_api.register()
    assert recbole.utils.get_model is before and recbole_api.registered()


def _saved(folder: Path, model: str):
    return {p for p in folder.glob(f"{model}-*.pth") if not p.stem.endswith("-last")}


def test_recbole_run_recbole_trains_a_plugin_model_with_our_numbers(tiny_config, monkeypatch):
    from recbole.quick_start import load_data_and_model, run_recbole

    monkeypatch.setattr(sys, "argv", ["run_recbole.py"])  # RecBole's Config reads the command line
    saved = Path(tiny_config["checkpoint_dir"])
    theirs = run_recbole(model="DiffuReasonSASRec", dataset="tiny", config_dict=tiny_config)
    written = _saved(saved, "DiffuReasonSASRec")
    ours = run("DiffuReasonSASRec", "tiny", config_dict=tiny_config, cmd_args=[])
    # Same config layers, same seeds, same trainer: RecBole's entry point gives the plugin's numbers.
    assert dict(theirs["test_result"]) == dict(ours["test_result"])
    assert dict(theirs["best_valid_result"]) == dict(ours["best_valid_result"])

    (model_file,) = written  # RecBole's run_recbole wrote one of our checkpoints...
    state = torch.load(model_file, weights_only=True)  # ...a plain dict, no pickled classes
    assert state["model_class"] == "DiffuReasonSASRec"
    config, model, _, _, _, test_data = load_data_and_model(str(model_file))  # RecBole's function
    assert isinstance(model, DiffuReasonSASRec) and config["model"] == "DiffuReasonSASRec"
    trainer = recbole_diffureason.get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    assert dict(trainer.evaluate(test_data, load_best_model=False)) == dict(theirs["test_result"])


def test_recbole_load_data_and_model_reads_our_checkpoints_of_recbole_models(tiny_config):
    from recbole.model.sequential_recommender import SASRec
    from recbole.quick_start import load_data_and_model

    result = run("SASRec", "tiny", config_dict=tiny_config, cmd_args=[])
    config, model, _, _, _, test = load_data_and_model(result["saved_model_file"])  # was KeyError: 'config'
    assert type(model) is SASRec and config["dataset"] == "tiny" and len(test) > 0
    state = torch.load(result["saved_model_file"], weights_only=True)
    assert all(torch.equal(v, state["state_dict"][k]) for k, v in model.state_dict().items())


def test_recbole_load_data_and_model_leaves_other_files_to_recbole(tmp_path):
    from recbole.quick_start import load_data_and_model

    foreign = tmp_path / "foreign.pth"
    torch.save({"weights": torch.zeros(1)}, foreign)
    assert not recbole_api.is_plugin_checkpoint(foreign)
    with pytest.raises(KeyError, match="config"):  # RecBole's own function, with its own behaviour
        load_data_and_model(str(foreign))


def test_requested_model_follows_recbole_precedence(tmp_path):
    yaml = tmp_path / "a.yaml"
    yaml.write_text("model: SASRec\n", encoding="utf-8")
    assert recbole_api.requested_model(None, [str(yaml)], None, argv=[]) == "SASRec"
    assert recbole_api.requested_model(None, [str(yaml)], {"model": "LARES"}, argv=[]) == "LARES"
    assert recbole_api.requested_model(None, [str(yaml)], {"model": "LARES"},
                                       argv=["--model=DiffuReasonSASRec"]) == "DiffuReasonSASRec"
    assert recbole_api.requested_model(DiffuReasonSASRec, None, None, argv=[]) == "DiffuReasonSASRec"


def test_recbole_config_of_a_plugin_model_is_ours_and_turns_anomaly_detection_off(tiny_config, monkeypatch):
    import recbole.quick_start.quick_start as recbole_quick_start

    from recbole_diffureason.config import DRConfig

    monkeypatch.setattr(sys, "argv", ["run_recbole.py"])
    torch.autograd.set_detect_anomaly(True)  # what importing RecBole's sine.py does
    try:
        config = recbole_quick_start.Config(model="DiffuReasonSASRec", dataset="tiny", config_dict=tiny_config)
        assert isinstance(config, DRConfig) and config["reasoning_steps"] == 3  # our YAML defaults
        assert not torch.is_anomaly_enabled()
        theirs = recbole_quick_start.Config(model="SASRec", dataset="tiny",
                                            config_dict={**tiny_config, "train_neg_sample_args": None})
        assert not isinstance(theirs, DRConfig)  # RecBole's models keep RecBole's Config
    finally:
        torch.autograd.set_detect_anomaly(False)
