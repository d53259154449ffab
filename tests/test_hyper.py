"""Hyper-parameter search: params files, RecBole's HyperTuning (hyperopt) and Ray Tune."""

from __future__ import annotations

import json
import math

import pytest

from recbole_diffureason.cli import main
from recbole_diffureason.config import properties_dir
from recbole_diffureason.hyper import read_params_file, run_hyperopt, run_ray, to_recbole_params_dict
from recbole_diffureason.keys import ConfigError


def write_params(tmp_path, text):
    path = tmp_path / "space.hyper"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_params_file_types(tmp_path):
    params = read_params_file(write_params(tmp_path, (
        "learning_rate loguniform -8, 0\nalpha uniform 0.1,2\n# comment\n\ngroup_size quniform 4,16,4\n"
        "pooling choice ['attention','mean']\n")))
    assert [(p.name, p.kind) for p in params] == [("learning_rate", "loguniform"), ("alpha", "uniform"),
                                                   ("group_size", "quniform"), ("pooling", "choice")]
    assert params[0].values == (-8.0, 0.0) and params[3].values == ("attention", "mean")
    assert to_recbole_params_dict(params)["choice"] == {"pooling": ["attention", "mean"]}


@pytest.mark.parametrize("text,message", [
    ("alpha between 1,2\n", "unknown parameter type 'between'"),
    ("alpha uniform 2,1\n", "low <= high"),
    ("alpha uniform x,1\n", "comma-separated numbers"),
    ("alpha choice [1,2\n", "list literal"),
    ("alpha choice []\n", "non-empty list"),
    ("alpha quniform 1,4\n", "low,high,q"),
    ("alpha\n", "expected '<name>"),
    ("\n# only a comment\n", "defines no parameter"),
])
def test_malformed_params_files_are_named(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        read_params_file(write_params(tmp_path, text))


def test_shipped_params_files_parse():
    for path in sorted((properties_dir() / "hyper").glob("*.hyper")):
        assert read_params_file(path), path.name
    names = {p.name for p in read_params_file(properties_dir() / "hyper" / "DiffuReasonSASRec.hyper")}
    assert {"alpha", "beta", "reasoning_steps", "group_size", "learning_rate"} <= names


def test_hyperopt_exhaustive_search_over_diffureason(tiny_config, tmp_path):
    fixed = dict(tiny_config, model="DiffuReasonSASRec", dataset="tiny")
    output = tmp_path / "search.result"
    result = run_hyperopt(write_params(tmp_path, "alpha choice [0.5,1.0]\nreasoning_steps choice [1,2]\n"),
                          fixed, algo="exhaustive", output_file=str(output))
    assert len(result["trials"]) == 4
    scores = {k: v["best_valid_score"] for k, v in result["trials"].items()}
    assert result["best_valid_score"] == max(scores.values())
    text = output.read_text()
    assert text.count("Valid result:") == 4 and text.count("Test result:") == 4


def test_ray_grid_search_reports_validation_metrics(tiny_config, tmp_path):
    ray = pytest.importorskip("ray")
    fixed = dict(tiny_config, model="DiffuReasonSASRec", dataset="tiny")
    output = tmp_path / "ray.result"
    try:
        result = run_ray(write_params(tmp_path, "alpha choice [0.5,1.0]\n"), fixed, algo="exhaustive",
                         max_concurrent=1, cpus_per_trial=1, output_file=str(output),
                         local_dir=str(tmp_path / "ray"), ray_init={"num_cpus": 1})
    finally:
        ray.shutdown()
    assert sorted(t["params"]["alpha"] for t in result["trials"]) == [0.5, 1.0]
    for trial in result["trials"]:
        assert set(trial["valid"]) == {"recall@5", "recall@10", "ndcg@5", "ndcg@10"}
        assert trial["valid_score"] == trial["valid"]["ndcg@10"]  # selection on the validation metric
        assert trial["test"] is not None  # written by the trial, never shown to Ray
    assert result["best_valid_score"] == max(t["valid_score"] for t in result["trials"])
    assert output.read_text().count("Valid result:") == 2


def test_hyper_command_line_errors(capsys, tmp_path):
    assert main(["hyper", "--model=DiffuReasonSASRec", "--dataset=tiny",
                 f"--params_file={tmp_path / 'missing.hyper'}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = write_params(tmp_path, "alpha uniform 1\n")
    assert main(["hyper", "--model=DiffuReasonSASRec", "--dataset=tiny", f"--params_file={bad}"]) == 2
    assert "low,high" in capsys.readouterr().err


def test_loguniform_bounds_are_exponents_for_ray(tmp_path):
    pytest.importorskip("ray")
    from recbole_diffureason.hyper import to_ray_space

    space = to_ray_space(read_params_file(write_params(tmp_path, "learning_rate loguniform -8,0\n")), grid=False)
    assert space["learning_rate"].lower == pytest.approx(math.exp(-8)) and space["learning_rate"].upper == 1.0
    with pytest.raises(ConfigError, match="choice parameters only"):
        to_ray_space(read_params_file(write_params(tmp_path, "alpha uniform 0,1\n")), grid=True)


def write_fixed_yaml(tmp_path, tiny_config, **extra):
    import yaml

    path = tmp_path / "fixed.yaml"
    path.write_text(yaml.safe_dump({**tiny_config, **extra}), encoding="utf-8")
    return str(path)


def test_run_hyper_flags_take_model_and_dataset_from_config_files(tiny_config, tmp_path, capsys):
    """RecBole's run_hyper.py command line: --tool=Hyperopt, model and dataset in --config_files."""

    files = write_fixed_yaml(tmp_path, tiny_config, model="SASRec", dataset="tiny")
    output = tmp_path / "out.result"
    params = write_params(tmp_path, "learning_rate choice [0.01]")
    assert main(["hyper", f"--config_files={files}", f"--params_file={params}", "--tool=Hyperopt",
                 f"--output_file={output}"]) == 0
    out = capsys.readouterr().out  # hyperopt's progress lines, then the summary
    printed = json.loads(out[out.index('{\n  "best_params"'):])
    assert printed["best_params"] == {"learning_rate": 0.01} and printed["output_file"] == str(output)
    assert output.read_text().count("Valid result:") == 1 and "learning_rate:0.01" in output.read_text()


@pytest.mark.parametrize("args,message", [
    (["--tool=Foo"], "invalid choice: 'foo'"),
    ([], "No model and dataset given"),
    (["--model=SASRec"], "No dataset given"),
    (["--model=SASRec", "--dataset=tiny", "--scheduler=asha"], "--scheduler=asha needs --tool=Ray"),
    (["--model=SASRec", "--dataset=tiny", "--config_files=nowhere.yaml"], "nowhere.yaml' does not exist"),
])
def test_run_hyper_bad_flags_are_one_line(args, message, capsys, workdir):
    assert main(["hyper"] + args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("error: ") and "\n" not in err


def test_run_hyper_passes_ray_scheduler_flags(monkeypatch, tmp_path, capsys, workdir):
    from recbole_diffureason import hyper

    seen = {}

    def fake_run_ray(*args, **kwargs):
        seen.update(args=args, kwargs=kwargs)
        return {"best_params": {}, "best_valid_score": 0.0, "trials": []}

    monkeypatch.setattr(hyper, "run_ray", fake_run_ray)
    assert main(["hyper", "--model=SASRec", "--dataset=tiny", "--tool=RAY", "--scheduler=ASHA", "--grace_period=2",
                 "--reduction_factor=3", "--algo=Random", "--num_samples=4", "--epochs=5"]) == 0
    assert seen["kwargs"] == {"scheduler": "asha", "grace_period": 2, "reduction_factor": 3.0}
    assert seen["args"][1] == {"epochs": 5, "model": "SASRec", "dataset": "tiny"} and seen["args"][3] == "random"


def test_ray_asha_stops_a_weak_trial_after_its_first_validation(tiny_config, tmp_path):
    ray = pytest.importorskip("ray")
    fixed = dict(tiny_config, model="SASRec", dataset="tiny", epochs=4, stopping_step=10)
    output = tmp_path / "asha.result"
    try:  # the strong trial runs first (grid order), so ASHA's first rung has a score to cut against
        result = run_ray(write_params(tmp_path, "learning_rate choice [0.01,0.0000001]\n"), fixed, algo="exhaustive",
                         output_file=str(output), local_dir=str(tmp_path / "ray"), ray_init={"num_cpus": 1},
                         scheduler="asha", grace_period=1, reduction_factor=2)
    finally:
        ray.shutdown()
    strong, weak = sorted(result["trials"], key=lambda t: -t["params"]["learning_rate"])
    assert strong["validations"] == 4 and not strong["stopped_early"] and strong["test"] is not None
    assert weak["validations"] == 1 and weak["stopped_early"] and weak["test"] is None
    assert result["best_params"] == {"learning_rate": 0.01}
    assert "Stopped early by the scheduler after 1 validation(s)" in output.read_text()


def test_asha_settings_are_checked():
    pytest.importorskip("ray")
    from recbole_diffureason.hyper import make_scheduler

    assert make_scheduler("fifo") is None and make_scheduler("asha") is not None
    with pytest.raises(ConfigError, match="grace_period >= 1"):
        make_scheduler("asha", grace_period=0)
    with pytest.raises(ConfigError, match="reduction_factor > 1"):
        make_scheduler("asha", reduction_factor=1)
    with pytest.raises(ConfigError, match="Unknown scheduler"):
        make_scheduler("hyperband")
