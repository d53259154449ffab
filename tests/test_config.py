"""DRConfig: YAML layering and priority, key validation, presets and RecBole compatibility."""

from __future__ import annotations

import logging

import pytest
import yaml

from recbole_diffureason.config import DRConfig, parse_cmd_args, properties_dir, read_yaml
from recbole_diffureason.keys import ConfigError


def config(tiny_config, model="DiffuReasonSASRec", files=None, cmd=None, **overrides):
    return DRConfig(model=model, dataset="tiny", config_file_list=files, config_dict={**tiny_config, **overrides},
                    cmd_args=cmd or [])


def write(tmp_path, name, values):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return str(path)


def test_model_yaml_provides_every_default(data_root, workdir):
    cfg = DRConfig("DiffuReasonSASRec", "tiny", config_dict={"data_path": str(data_root)}, cmd_args=[])
    ours = read_yaml(properties_dir() / "model" / "DiffuReasonSASRec.yaml")
    for key, value in ours.items():
        assert cfg[key] == value, key
    assert cfg["reasoning_steps"] == 3 and cfg["diffusion_steps"] == 16 and cfg["group_size"] == 8
    assert cfg["train_neg_sample_args"]["distribution"] == "none"  # CE needs no negatives
    assert cfg["clip_grad_norm"] == {"max_norm": 5.0}  # docs/design.md 5.5.1 "Stability"


def test_gradient_clipping_can_be_switched_off_from_the_command_line(data_root, workdir):
    cfg = DRConfig("DiffuReasonSASRec", "tiny", config_dict={"data_path": str(data_root)},
                   cmd_args=["--clip_grad_norm=None"])
    assert cfg["clip_grad_norm"] is None


def test_backbone_defaults_equal_recbole_sasrec_defaults():
    recbole_sasrec = read_yaml(properties_dir().parent / "properties" / "model" / "DiffuReasonSASRec.yaml")
    import recbole

    from pathlib import Path

    builtin = read_yaml(Path(recbole.__file__).parent / "properties" / "model" / "SASRec.yaml")
    for key, value in builtin.items():
        assert recbole_sasrec[key] == value, key


def test_priority_file_below_dict_below_command_line(tiny_config, tmp_path):
    files = [write(tmp_path, "a.yaml", {"alpha": 0.1, "beta": 0.1, "group_size": 3}),
             write(tmp_path, "b.yaml", {"alpha": 0.2})]
    cfg = config(tiny_config, files=files, cmd=["--beta=0.5"], group_size=5)
    assert cfg["alpha"] == 0.2        # later file wins over earlier file
    assert cfg["group_size"] == 5     # config_dict wins over files
    assert cfg["beta"] == 0.5         # command line wins over config_dict and files


def test_dataset_yaml_sits_above_model_yaml(tiny_config, tmp_path, monkeypatch):
    import recbole_diffureason.config as config_module

    props = tmp_path / "props"
    (props / "model").mkdir(parents=True)
    (props / "dataset").mkdir()
    real = properties_dir()
    (props / "overall.yaml").write_text((real / "overall.yaml").read_text())
    (props / "model" / "DiffuReasonSASRec.yaml").write_text((real / "model" / "DiffuReasonSASRec.yaml").read_text())
    (props / "dataset" / "tiny.yaml").write_text("group_size: 6\nMAX_ITEM_LIST_LENGTH: 5\n")
    monkeypatch.setattr(config_module, "properties_dir", lambda: props)
    base = {k: v for k, v in tiny_config.items() if k not in ("group_size", "MAX_ITEM_LIST_LENGTH")}
    cfg = DRConfig("DiffuReasonSASRec", "tiny", config_dict=base, cmd_args=[])
    assert cfg["group_size"] == 6 and cfg["MAX_ITEM_LIST_LENGTH"] == 5
    assert DRConfig("DiffuReasonSASRec", "tiny", config_dict={**base, "group_size": 2}, cmd_args=[])["group_size"] == 2


def test_beauty_protocol_yaml_is_loaded_for_that_dataset(data_root, workdir):
    cfg = DRConfig("SASRec", "Amazon_Beauty", config_dict={"data_path": str(data_root)}, cmd_args=[])
    assert cfg["MAX_ITEM_LIST_LENGTH"] == 20 and cfg["valid_metric"] == "NDCG@10"
    assert cfg["topk"] == [5, 10, 20] and cfg["eval_args"]["order"] == "TO"
    assert cfg["eval_args"]["split"] == {"LS": "valid_and_test"} and cfg["eval_args"]["mode"]["test"] == "full"


def test_recbole_builtin_keeps_its_own_defaults(tiny_config):
    cfg = config({k: v for k, v in tiny_config.items() if k not in ("hidden_size", "n_layers", "inner_size")},
                 model="SASRec")
    assert cfg["hidden_size"] == 64 and cfg["inner_size"] == 256 and cfg["loss_type"] == "CE"
    assert cfg["reasoning_steps"] is None  # no DiffuReason key leaks into a built-in
    assert cfg["clip_grad_norm"] is None  # nor DiffuReason's gradient clipping


@pytest.mark.parametrize("key,value,message", [
    ("beta", -1.0, "'beta' is -1.0"),
    ("reasoning_steps", 0, "'reasoning_steps' is 0"),
    ("pooling", "max", "'pooling' is 'max'"),
    ("use_diffusion", "yes", "'use_diffusion' is 'yes'"),
    ("group_size", 1, "'group_size' is 1"),
    ("think_dropout", 1.0, "'think_dropout' is 1.0"),
    ("reward", "auc", "'reward' is 'auc'"),
])
def test_invalid_values_are_reported_by_key(tiny_config, key, value, message):
    with pytest.raises(ConfigError, match=message):
        config(tiny_config, **{key: value})


def test_all_bad_keys_are_listed_at_once(tiny_config):
    with pytest.raises(ConfigError) as err:
        config(tiny_config, alpha=-1, group_size=0)
    assert "'alpha'" in str(err.value) and "'group_size'" in str(err.value)


def test_cross_key_checks(tiny_config):
    with pytest.raises(ConfigError, match="sigma_min"):
        config(tiny_config, sigma_min=0.5, sigma_max=0.1)
    with pytest.raises(ConfigError, match="'loss_type' is 'BPR', but must be one of 'CE': the model trains with a full-softmax"):
        config(tiny_config, loss_type="BPR")
    with pytest.raises(ConfigError, match="divisible"):
        config(tiny_config, hidden_size=15)


def test_ablation_preset_sets_its_keys_and_refuses_contradictions(tiny_config):
    cfg = config(tiny_config, ablation="wo_diffusion_rl")
    assert cfg["use_diffusion"] is False and cfg["beta"] == 0.0
    assert config(tiny_config, ablation="wo_rl", beta=0.0)["beta"] == 0.0
    with pytest.raises(ConfigError, match="ablation 'wo_rl' sets 'beta'"):
        config(tiny_config, ablation="wo_rl", beta=0.5)
    with pytest.raises(ConfigError, match="'ablation' is 'wo_everything'"):
        config(tiny_config, ablation="wo_everything")


def test_unknown_keys_warn_with_a_suggestion(tiny_config, caplog):
    with caplog.at_level(logging.WARNING):
        cfg = config(tiny_config, alpah=0.5)
    assert "alpah" in cfg.unknown_keys
    assert "Did you mean 'alpha'" in caplog.text


def test_command_line_parsing():
    assert parse_cmd_args(["--a=1", "--b=x=y"]) == {"a": "1", "b": "x=y"}
    for bad in (["a=1"], ["--a"], ["--=3"]):
        with pytest.raises(ConfigError):
            parse_cmd_args(bad)
    with pytest.raises(ConfigError, match="twice"):
        parse_cmd_args(["--a=1", "--a=2"])


def test_command_line_values_are_typed_as_recbole_does(tiny_config):
    cfg = config(tiny_config, cmd=["--alpha=0.5", "--use_diffusion=False", "--pooling=mean", "--topk=[5,10]"])
    assert cfg["alpha"] == 0.5 and cfg["use_diffusion"] is False and cfg["pooling"] == "mean"
    assert cfg["topk"] == [5, 10]


def test_missing_or_broken_config_files_are_named(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config(tiny_config, files=[str(tmp_path / "missing.yaml")])
    broken = tmp_path / "broken.yaml"
    broken.write_text("alpha: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config(tiny_config, files=[str(broken)])
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        config(tiny_config, files=[str(listing)])


def test_plain_dict_round_trip(tiny_config):
    cfg = config(tiny_config)
    again = DRConfig.from_plain_dict(cfg.plain_dict())
    assert again["MODEL_TYPE"] == cfg["MODEL_TYPE"] and again["eval_type"] == cfg["eval_type"]
    assert again.model_class is cfg.model_class and again["alpha"] == cfg["alpha"]
