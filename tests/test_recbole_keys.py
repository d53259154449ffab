"""RecBole's own keys are checked before any data loads, for every model; unknown keys are logged to the file."""

from __future__ import annotations

import logging

import pytest

from recbole_diffureason.cli import main
from recbole_diffureason.config import DRConfig
from recbole_diffureason.keys import ConfigError, EvalArgs, Int, ListOf, Str


@pytest.mark.parametrize("key,value,message", [
    ("epochs", "abc", "'epochs' is 'abc', but must be an integer >= 1"),
    ("epochs", 0, "'epochs' is 0"),
    ("MAX_ITEM_LIST_LENGTH", 0, "'MAX_ITEM_LIST_LENGTH' is 0, but must be an integer >= 1"),
    ("train_batch_size", 0, "'train_batch_size' is 0"),
    ("eval_batch_size", 2.5, "'eval_batch_size' is 2.5"),
    ("learning_rate", 0, "'learning_rate' is 0, but must be a number > 0.0"),
    ("learning_rate", "fast", "'learning_rate' is 'fast'"),
    ("topk", [5, 0], "'topk' is \\[5, 0\\], but must be a non-empty list, each an integer >= 1"),
    ("topk", [], "'topk' is \\[\\]"),
    ("metrics", ["Recall", "NDGC"], "'metrics' is \\['Recall', 'NDGC'\\], but must be a non-empty list, each one of"),
    ("valid_metric", "", "'valid_metric' is ''"),
    ("stopping_step", -1, "'stopping_step' is -1"),
    ("eval_step", "often", "'eval_step' is 'often'"),
    ("seed", -3, "'seed' is -3, but must be an integer >= 0 and <= 4294967295"),
    ("eval_args", "loo", "'eval_args' is 'loo', but must be a mapping"),
    ("eval_args", {"split": {"LS": "valid"}}, "'eval_args' has split \\{'LS': 'valid'\\}, but 'LS' takes"),
    ("eval_args", {"split": {"RS": [0.8, -0.1, 0.1]}}, "'RS' takes a list of up to 3 non-negative ratios"),
    ("eval_args", {"order": "time"}, "'eval_args' has order 'time'"),
    ("eval_args", {"mode": "uni0"}, "'eval_args' has mode 'uni0'"),
    ("eval_args", {"splitt": {}}, "'eval_args' has unknown entries \\['splitt'\\]"),
])
@pytest.mark.parametrize("model", ["SASRec", "GRU4Rec", "DiffuReasonSASRec"])
def test_recbole_keys_are_checked_for_every_model(tiny_config, model, key, value, message):
    with pytest.raises(ConfigError, match=message):
        DRConfig(model, "tiny", config_dict={**tiny_config, key: value}, cmd_args=[])


@pytest.mark.parametrize("overrides,message", [
    ({"valid_metric": "MRR@10"}, "'valid_metric' is 'MRR@10', but 'mrr' is not in 'metrics' \\['recall', 'ndcg'\\]"),
    ({"valid_metric": "NDCG@20"}, "ndcg needs '@k' with k one of 'topk' \\[5, 10\\], e.g. 'NDCG@5'"),
    ({"valid_metric": "NDCG"}, "ndcg needs '@k'"),
    ({"metrics": ["AUC", "NDCG"]}, "mixes ranking metrics with value metrics \\(auc\\)"),
    ({"metrics": ["AUC"], "valid_metric": "AUC@10"}, "auc has no cutoff: write 'auc'"),
    ({"metrics": ["AUC"], "valid_metric": "AUC"}, "full-ranking evaluation"),
])
def test_metrics_topk_and_valid_metric_must_fit_together(tiny_config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        DRConfig("SASRec", "tiny", config_dict={**tiny_config, **overrides}, cmd_args=[])


def test_values_recbole_accepts_still_pass(tiny_config):
    cfg = DRConfig("SASRec", "tiny", config_dict={**tiny_config, "topk": 10, "metrics": "ndcg",
                                                  "valid_metric": "ndcg@10", "eval_step": 0, "stopping_step": 0,
                                                  "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "mode": "uni100"}},
                   cmd_args=[])
    assert cfg["topk"] == [10] and cfg["metrics"] == ["ndcg"]
    assert cfg["eval_args"]["mode"] == {"valid": "uni100", "test": "uni100"}


def test_key_classes_describe_what_they_accept():
    assert ListOf(item=Int(min=1)).problem([1, 2]) is None
    assert ListOf(item=Int(min=1), allow_single=True).problem(3) is None
    assert "non-empty list" in ListOf(item=Int(min=1)).problem(3)
    assert ListOf(item=Int(), min_length=2).problem([1]).endswith("a list of at least 2 entries, each an integer")
    assert Str().problem("  ") == "is '  ', but must be a non-empty string"
    assert EvalArgs().problem({"group_by": "item"}).startswith("has group_by 'item'")
    assert EvalArgs().problem(None) == "is missing" and EvalArgs(optional=True).problem(None) is None


@pytest.mark.parametrize("override", ["--epochs=abc", "--MAX_ITEM_LIST_LENGTH=0", "--train_batch_size=0"])
def test_bad_recbole_keys_stop_the_command_before_anything_is_written(data_root, workdir, capsys, override):
    """The reviewer's reproduction: these gave tracebacks after the data had loaded."""
    assert main(["--model=SASRec", "--dataset=tiny", f"--data_path={data_root}", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Invalid configuration for model SASRec:") and "Traceback" not in err
    assert f"'{override[2:].split('=')[0]}'" in err
    assert not any(workdir.iterdir())  # no log, no checkpoint, no results


def test_unknown_key_warnings_reach_the_log_file(tiny_config, workdir, monkeypatch):
    """RecBole's init_logger runs after the config is built; the warnings are kept and logged once it has."""
    from recbole_diffureason.quick_start import run

    # init_logger calls logging.basicConfig, a no-op while the root logger has handlers (pytest's own): give
    # it a bare root logger for this run, and put everything back afterwards.
    root, level = logging.getLogger(), logging.getLogger().level
    monkeypatch.setattr(root, "handlers", [])
    try:
        run("SASRec", "tiny", config_dict={**tiny_config, "state": "WARNING", "hiden_size": 8}, cmd_args=[])
        for handler in root.handlers:
            handler.flush()
        text = "\n".join(p.read_text() for p in (workdir / "log").rglob("*.log"))
    finally:
        for handler in root.handlers:
            handler.close()
        root.setLevel(level)
    assert "Config key 'hiden_size' is not used by RecBole or by model SASRec. Did you mean 'hidden_size'?" in text
    assert text.count("'hiden_size'") == 1
