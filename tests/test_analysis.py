"""``analyze``: training curves, thinking steps (paper Fig. 4) and user/item groups (Fig. 5) of a checkpoint."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from recbole_diffureason.analysis import (AnalysisError, analyze, paired_comparison, quantile_groups, row_metrics,
                                         thought_scorers)
from recbole_diffureason.cli import main
from recbole_diffureason.quick_start import run
from tests.conftest import write_tiny_inter


@pytest.fixture
def trained(tiny_config):
    """A DiffuReasonSASRec and a SASRec run on the tiny data (2 epochs each)."""
    config = dict(tiny_config, epochs=2)
    return (run("DiffuReasonSASRec", "tiny", config_dict=config, cmd_args=[]),
            run("SASRec", "tiny", config_dict=config, cmd_args=[]))


def raw_counts(data_root: Path) -> Counter:
    lines = (data_root / "tiny" / "tiny.inter").read_text(encoding="utf-8").splitlines()[1:]
    return Counter(line.split("\t")[0] for line in lines)


def test_analyze_writes_three_figures_and_the_numbers_behind_them(trained, data_root, workdir, capsys):
    pytest.importorskip("matplotlib")
    model, baseline = trained
    out = workdir / "analysis"
    assert main(["analyze", f"--model_file={model['saved_model_file']}",
                 f"--baseline_file={baseline['saved_model_file']}", f"--out={out}"]) == 0
    printed = json.loads(capsys.readouterr().out)
    for name in ("training_curves.png", "thinking_steps.png", "groups.png", "analysis.json"):
        assert str(out / name) in printed["files"]
        assert (out / name).stat().st_size > 0
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "analysis.json").read_text(encoding="utf-8"))

    # The results file was found next to the checkpoint; its history is the curve.
    curves = report["training_curves"]
    assert report["results_file"] == model["results_file"]
    assert len(curves["epoch"]) == len(model["history"]) == 4  # the defaults' two stages (backbone_first), 2 epochs each
    assert curves["losses"]["rec"] == [e["losses"]["rec"] for e in model["history"]]
    assert curves["valid"] == [e["valid_result"]["ndcg@10"] for e in model["history"]]

    # Fig. 4: one row per thought tau_1..tau_R, then mu, which is what the model ranks with: RecBole's result.
    steps = report["thinking_steps"]
    assert [s["step"] for s in steps] == ["tau_1", "tau_2", "tau_3", "mu"]
    assert round(steps[-1]["ndcg@10"], 4) == model["test_result"]["ndcg@10"]
    assert round(steps[-1]["recall@10"], 4) == model["test_result"]["recall@10"]

    # Fig. 5: groups partition the test users; the baseline's numbers are its own test result.
    for kind in ("history_length", "target_popularity"):
        rows = report["groups"][kind]["rows"]
        assert sum(r["rows"] for r in rows) == 80
        base = sum(r["baseline_ndcg@10"] * r["rows"] for r in rows) / 80
        assert round(base, 4) == baseline["test_result"]["ndcg@10"]
        for r in rows:
            expected = (r["ndcg@10"] - r["baseline_ndcg@10"]) / r["baseline_ndcg@10"] * 100
            assert r["gain_ndcg@10_pct"] == pytest.approx(expected)
    assert report["baseline"]["model"] == "SASRec"


def test_history_length_groups_count_interactions_before_the_test_item(trained, data_root, workdir):
    model, _ = trained
    report = analyze(model["saved_model_file"], out_dir=str(workdir / "a"), n_groups=80, plot=False)
    counts = raw_counts(data_root)
    before = sorted(c - 1 for c in counts.values())  # every interaction but the test item
    rows = report["groups"]["history_length"]["rows"]
    assert sum(r["rows"] for r in rows) == len(before) == 80
    for r in rows:  # each group holds exactly the users with that many earlier interactions
        lo, _, hi = r["group"].partition("-")
        assert r["rows"] == sum(int(lo) <= b <= int(hi or lo) for b in before), r
    assert len(rows) >= len(set(before)) - 1  # one group per distinct value (the top two share the last)
    assert "baseline" not in report and "gain_ndcg@10_pct" not in rows[0]


def test_analyze_without_matplotlib_writes_json_and_says_how_to_get_pictures(trained, workdir, capsys, monkeypatch):
    model, _ = trained
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = workdir / "nomatplotlib"
    assert main(["analyze", f"--model_file={model['saved_model_file']}", f"--out={out}"]) == 0
    assert (out / "analysis.json").is_file() and not list(out.glob("*.png"))
    assert 'pip install "recbole-diffureason[plot]"' in capsys.readouterr().err


def test_analyze_a_model_without_thoughts(trained, workdir):
    _, baseline = trained
    report = analyze(baseline["saved_model_file"], out_dir=str(workdir / "s"), plot=False)
    assert "thinking_steps" not in report and any("no thinking steps" in n for n in report["notes"])
    assert round(report["overall"]["ndcg@10"], 4) == baseline["test_result"]["ndcg@10"]


def test_analyze_bad_input_is_one_line(trained, tiny_config, workdir, capsys, tmp_path):
    model, _ = trained
    assert main(["analyze", f"--model_file={workdir / 'missing.pth'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing.pth' does not exist" in err and "\n" not in err

    assert main(["analyze", f"--model_file={model['saved_model_file']}", "--results_file=nowhere.json"]) == 2
    assert "Results file 'nowhere.json' does not exist" in capsys.readouterr().err

    other_root = write_tiny_inter(tmp_path / "other", name="tiny2", seed=3)
    other = run("SASRec", "tiny2", config_dict=dict(tiny_config, data_path=str(other_root)), cmd_args=[])
    assert main(["analyze", f"--model_file={model['saved_model_file']}",
                 f"--baseline_file={other['saved_model_file']}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "trained on 'tiny2'" in err and "\n" not in err

    assert main(["analyze", f"--model_file={model['saved_model_file']}", "--k=0"]) == 2
    assert "at least 1" in capsys.readouterr().err


def test_row_metrics_match_recbole_definitions():
    import torch

    scores = torch.tensor([[0.0, 0.9, 0.8, 0.1], [0.0, 0.1, 0.2, 0.9]])
    ndcg, recall = row_metrics(scores, torch.tensor([0, 1]), torch.tensor([2, 1]), k=2)
    assert ndcg.tolist() == pytest.approx([1 / np.log2(3), 0.0]) and recall.tolist() == [1.0, 0.0]


def test_quantile_groups_keep_ties_together():
    index, labels = quantile_groups(np.array([1, 1, 1, 1, 5, 9]), 3)
    assert labels[0] == "1" and len(set(index[:4])) == 1


def test_analyze_with_a_baseline_reports_the_paired_test_of_the_overall_gain(trained, workdir, capsys):
    model, baseline = trained
    out = workdir / "paired"
    assert main(["analyze", f"--model_file={model['saved_model_file']}",
                 f"--baseline_file={baseline['saved_model_file']}", f"--out={out}"]) == 0
    printed = json.loads(capsys.readouterr().out)["paired"]
    report = json.loads((out / "analysis.json").read_text(encoding="utf-8"))
    assert report["paired"] == printed
    for metric in ("ndcg@10", "recall@10"):
        paired = printed[metric]
        assert round(paired["model"], 4) == model["test_result"][metric]
        assert round(paired["baseline"], 4) == baseline["test_result"][metric]
        assert paired["rows"] == paired["rows_better"] + paired["rows_worse"] + paired["rows_equal"] == 80
        assert 0.0 <= paired["p_paired_t"] <= 1.0 and 0.0 <= paired["p_wilcoxon"] <= 1.0


def test_analyze_against_itself_is_no_gain_and_no_evidence(trained, workdir):
    model, _ = trained
    report = analyze(model["saved_model_file"], baseline_file=model["saved_model_file"],
                     out_dir=str(workdir / "self"), plot=False)
    for paired in report["paired"].values():
        assert paired["rows_equal"] == 80 and paired["rows_better"] == paired["rows_worse"] == 0
        assert paired["p_paired_t"] == paired["p_wilcoxon"] == 1.0
        assert paired["gain_pct"] in (0.0, None)


def test_paired_comparison_separates_a_real_gain_from_noise():
    rng = np.random.default_rng(1)
    base = rng.random(2000)
    better = paired_comparison(base * 1.10, base)
    assert better["gain_pct"] == pytest.approx(10.0)
    assert 9.0 < better["gain_pct_ci95"][0] <= better["gain_pct_ci95"][1] < 11.0
    assert better["p_paired_t"] < 1e-6 and better["p_wilcoxon"] < 1e-6 and better["rows_worse"] == 0

    noise = paired_comparison(rng.permutation(base), base)  # same values, unrelated rows: zero expected gain
    assert noise["gain_pct"] == pytest.approx(0.0, abs=1e-9)
    assert noise["gain_pct_ci95"][0] < 0.0 < noise["gain_pct_ci95"][1]
    assert noise["p_paired_t"] > 0.05


def test_paired_comparison_is_reproducible_and_rejects_unpaired_input():
    base = np.linspace(0.0, 1.0, 50)
    ours = base[::-1].copy()
    assert paired_comparison(ours, base, seed=3) == paired_comparison(ours, base, seed=3)
    with pytest.raises(AnalysisError, match="equally long"):
        paired_comparison(ours[:-1], base)


def test_thought_scorers_score_each_new_batch_not_a_freed_one():
    """Batches are created and freed one after another, so a new batch can reuse a freed one's id()."""
    import torch
    from types import SimpleNamespace

    class Stub:
        forwards = 0

        def forward(self, batch):
            Stub.forwards += 1
            return SimpleNamespace(thoughts=batch.unsqueeze(1).repeat(1, 2, 1) * torch.tensor([1.0, 2.0])[:, None])

        def score_all(self, latent):
            return latent

        full_sort_predict = forward

    scorers = thought_scorers(Stub(), steps=2)
    for size in (4, 4, 3, 3):  # each batch is freed before the next is made
        first = scorers["tau_1"](torch.full((size, 5), float(size)))
        assert first.shape == (size, 5) and torch.all(first == size)
    batch = torch.ones(2, 5)
    before = Stub.forwards
    assert torch.all(scorers["tau_2"](batch) == 2.0) and torch.all(scorers["tau_1"](batch) == 1.0)
    assert Stub.forwards == before + 1  # both thoughts of one batch from one forward pass


def test_analyze_on_the_validation_split_matches_the_runs_best_valid_result(trained, workdir, capsys):
    model, baseline = trained
    out = workdir / "valid"
    assert main(["analyze", f"--model_file={model['saved_model_file']}", f"--baseline_file={baseline['saved_model_file']}",
                 f"--out={out}", "--split=valid"]) == 0
    report = json.loads((out / "analysis.json").read_text(encoding="utf-8"))
    assert report["split"] == "valid"
    assert round(report["thinking_steps"][-1]["ndcg@10"], 4) == model["best_valid_result"]["ndcg@10"]
    assert round(report["paired"]["ndcg@10"]["baseline"], 4) == baseline["best_valid_result"]["ndcg@10"]
    lengths = {r["group"]: r["rows"] for r in report["groups"]["history_length"]["rows"]}
    test_lengths = analyze(model["saved_model_file"], out_dir=str(workdir / "t"), plot=False)["groups"]["history_length"]
    assert sum(lengths.values()) == sum(r["rows"] for r in test_lengths["rows"]) == 80
    valid_low, test_low = (int(rows[0]["group"].split("-")[0])
                           for rows in (report["groups"]["history_length"]["rows"], test_lengths["rows"]))
    assert valid_low == test_low - 1  # the validation item comes one interaction before the test item
    with pytest.raises(AnalysisError, match="split must be one of test, valid"):
        analyze(model["saved_model_file"], out_dir=str(workdir / "x"), plot=False, split="train")


def test_the_mu_step_is_mu_when_the_model_scores_the_mean_of_the_steps(tiny_config):
    import torch

    from tests.helpers import build, first_batch

    _, model, _, _, test_data = build("DiffuReasonSASRec", tiny_config, thought_rec_weight=1.0,
                                      eval_latent="steps_mean")
    model.eval()
    batch = first_batch(test_data)
    with torch.no_grad():
        mu = model.score_all(model(batch, draw=0).policy.mu)
        scored = thought_scorers(model, steps=3)["mu"](batch)
        assert torch.allclose(scored, mu, atol=1e-5)
        assert not torch.allclose(scored, model.full_sort_predict(batch), atol=1e-4)  # the model scores the mean


def test_the_paired_test_and_groups_score_what_the_model_scores_not_mu(tiny_config, trained, workdir):
    # Under eval_latent steps_mean the model's evaluation scores the mean of the steps: the gain reported
    # against a baseline must be that one, with mu only among the thinking steps.
    steps_mean = run("DiffuReasonSASRec", "tiny", cmd_args=[], config_dict=dict(
        tiny_config, epochs=2, thought_rec_weight=1.0, eval_latent="steps_mean"))
    _, baseline = trained
    report = analyze(steps_mean["saved_model_file"], baseline_file=baseline["saved_model_file"],
                     out_dir=str(workdir / "steps_mean"), plot=False)
    for metric in ("ndcg@10", "recall@10"):
        assert round(report["paired"][metric]["model"], 4) == steps_mean["test_result"][metric]
        assert report["overall"][metric] == pytest.approx(report["paired"][metric]["model"])
    groups = report["groups"]["history_length"]["rows"]
    assert sum(row["rows"] for row in groups) == 80
    assert [step["step"] for step in report["thinking_steps"]] == ["tau_1", "tau_2", "tau_3", "mu"]
