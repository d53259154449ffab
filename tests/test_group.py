"""Group runs: several models, one protocol, one markdown and LaTeX table (RecBole's run_recbole_group.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from recbole_diffureason.cli import main
from recbole_diffureason.group import markdown_table, parse_model_list
from recbole_diffureason.keys import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def overrides(config: dict) -> list:
    return [f"--{k}={json.dumps(v) if isinstance(v, (dict, list)) else v}" for k, v in config.items()]


def test_group_trains_every_model_with_one_protocol_and_writes_the_tables(tiny_config, workdir, capsys):
    out = workdir / "tables"
    assert main(["group", "--model_list=SASRec,DiffuReasonSASRec", "--dataset=tiny", f"--output_dir={out}"]
                + overrides(tiny_config)) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in summary["results"]] == ["SASRec", "DiffuReasonSASRec"]
    for r in summary["results"]:  # each model's own results file, written with the shared settings
        saved = json.loads(Path(r["results_file"]).read_text(encoding="utf-8"))
        assert saved["config"]["MAX_ITEM_LIST_LENGTH"] == tiny_config["MAX_ITEM_LIST_LENGTH"]
        assert saved["test_result"] == r["test_result"]

    markdown = (out / "results.md").read_text(encoding="utf-8")
    test_part = markdown.split("## Test results")[1]
    for r in summary["results"]:
        assert f"| {r['model']} | " in test_part
        assert f"{r['test_result']['ndcg@10']:.4f}" in test_part
    best = max(r["test_result"]["ndcg@10"] for r in summary["results"])
    assert f"**{best:.4f}**" in test_part
    for name in ("valid.tex", "test.tex"):
        tex = (out / name).read_text(encoding="utf-8")
        assert "\\begin{tabular}" in tex and "DiffuReasonSASRec" in tex and "SASRec" in tex and "\\bfseries" in tex
    assert json.loads((out / "results.json").read_text())["dataset"] == "tiny"


def test_group_checks_every_model_before_training_any(tiny_config, workdir, capsys):
    assert main(["group", "--model_list=SASRec,NoSuchRec", "--dataset=tiny"] + overrides(tiny_config)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Unknown model 'NoSuchRec'") and "\n" not in err
    assert not Path(tiny_config["checkpoint_dir"]).exists()  # SASRec did not train first


@pytest.mark.parametrize("args,message", [
    (["--model_list=SASRec,SASRec", "--dataset=tiny"], "more than once"),
    (["--model_list=,", "--dataset=tiny"], "--model_list is empty"),
    (["--dataset=tiny"], "the following arguments are required: --model_list"),
    (["--model_list=SASRec"], "No dataset given"),
    (["--model_list=SASRec", "--dataset=tiny", "--beta=-2", "lr"], "--key=value"),
])
def test_group_bad_input_is_one_line(args, message, capsys, workdir):
    assert main(["group"] + args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("error: ") and "\n" not in err


def test_model_list_and_markdown_helpers():
    assert parse_model_list("SASRec, DiffuReasonSASRec") == ["SASRec", "DiffuReasonSASRec"]
    with pytest.raises(ConfigError):
        parse_model_list(" ")
    rows = [{"Model": "A", "ndcg@10": 0.1}, {"Model": "B", "ndcg@10": 0.2}]
    assert "| B | **0.2000** |" in markdown_table(rows, ["ndcg@10"], bigger=True)
    assert "| A | **0.1000** |" in markdown_table(rows, ["ndcg@10"], bigger=False)


def test_group_script_help_lists_recbole_flags():
    done = subprocess.run([sys.executable, str(ROOT / "run_recbole_group_dr.py"), "--help"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0
    for flag in ("--model_list", "--dataset", "--config_files", "--valid_latex", "--test_latex", "--nproc"):
        assert flag in done.stdout
