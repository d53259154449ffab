"""The command line: one-line errors for bad input, list and convert sub-commands, and a real run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


from recbole_diffureason.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_unknown_model_is_one_line_with_the_choices(capsys, data_root, workdir):
    assert main(["--model=NoSuchRec", "--dataset=tiny", f"--data_path={data_root}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Unknown model 'NoSuchRec'") and "\n" not in err
    assert "DiffuReasonSASRec" in err and "SASRec" in err


def test_unknown_dataset_says_how_to_get_it(capsys, data_root, workdir):
    assert main(["--model=SASRec", "--dataset=nowhere", f"--data_path={data_root}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Dataset 'nowhere' not found") and "\n" not in err
    assert "tiny" in err and "ml-100k" in err and "convert" in err


def test_missing_arguments_and_bad_overrides(capsys):
    assert main(["--model=SASRec"]) == 2
    assert "--dataset are required" in capsys.readouterr().err
    assert main(["--model=SASRec", "--dataset=ml-100k", "lr=3"]) == 2
    assert "--key=value" in capsys.readouterr().err


def test_invalid_hyper_parameter_is_reported(capsys, data_root, workdir):
    assert main(["--model=DiffuReasonSASRec", "--dataset=tiny", f"--data_path={data_root}", "--beta=-2"]) == 2
    assert "'beta' is -2" in capsys.readouterr().err


def test_list_models(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "Plugin models: DiffuReasonSASRec" in out and "GRU4Rec" in out


def test_script_runs_a_model_and_prints_metrics(tiny_config, workdir):
    args = [sys.executable, str(ROOT / "run_recbole_dr.py"), "--model=DiffuReasonSASRec", "--dataset=tiny"]
    args += [f"--{k}={json.dumps(v) if isinstance(v, (dict, list)) else v}" for k, v in tiny_config.items()]
    done = subprocess.run(args, capture_output=True, text=True, cwd=workdir, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    assert summary["model"] == "DiffuReasonSASRec" and "ndcg@10" in summary["test_result"]
    assert Path(summary["results_file"]).is_file()


def test_help_lists_every_subcommand():
    done = subprocess.run([sys.executable, str(ROOT / "run_recbole_dr.py"), "--help"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0
    listed = done.stdout.split("sub-commands", 1)[1]
    for name in ("train", "convert", "list", "recommend", "hyper", "group", "analyze"):
        assert f"\n  {name} " in listed, name


def test_train_subcommand_is_the_default_command(capsys, data_root, workdir):
    assert main(["train", "--model=NoSuchRec", "--dataset=tiny", f"--data_path={data_root}"]) == 2
    assert capsys.readouterr().err.startswith("error: Unknown model 'NoSuchRec'")
    assert main(["train", "--model=SASRec"]) == 2
    assert "--dataset are required" in capsys.readouterr().err
