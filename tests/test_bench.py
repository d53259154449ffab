"""The benchmark runner's bookkeeping: timings, ratios to the baseline, progress of unfinished runs, where
protocol sources are read from, and the comparison page."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench import compare_results, run_benchmark

ROOT = Path(__file__).resolve().parent.parent

PROTOCOL = {"name": "p", "dataset": "d", "baseline": "SASRec",
            "runs": [{"name": "SASRec", "model": "SASRec"}, {"name": "DR", "model": "DiffuReasonSASRec"}]}


def finished(name: str, model: str, seconds, ndcg: float) -> dict:
    metrics = {"ndcg@10": ndcg, "recall@10": 2 * ndcg}
    return {"tag": f"{name}-seed1", "name": name, "model": model, "seed": 1, "finished": True,
            "history": [{"train_seconds": s, "valid_seconds": s / 10} for s in seconds],
            "best_valid_result": metrics, "test_result": metrics}


def test_timing_ratio_uses_the_median_epoch_and_ignores_one_disturbed_epoch():
    rows = run_benchmark.summarise(PROTOCOL, [finished("SASRec", "SASRec", [10, 10, 10], 0.04),
                                              finished("DR", "DiffuReasonSASRec", [15, 15, 90], 0.05)])["rows"]
    dr = rows[1]
    assert dr["train_seconds_per_epoch"] == 15 and abs(dr["train_time_ratio"] - 1.5) < 1e-9
    assert abs(dr["test_change_vs_baseline"]["ndcg@10"] - 0.25) < 1e-9


def seeded(name: str, model: str, seed: int, ndcg: float, seconds: float = 10.0) -> dict:
    run = finished(name, model, [seconds] * 3, ndcg)
    run.update(tag=f"{name}-seed{seed}", seed=seed)
    return run


def test_seed_means_compare_the_mean_of_each_run_with_the_baselines_mean_over_the_same_seeds():
    results = [seeded("SASRec", "SASRec", 1, 0.040), seeded("SASRec", "SASRec", 2, 0.044),
               seeded("SASRec", "SASRec", 3, 0.100),  # a seed DR lacks: left out of DR's comparison
               seeded("DR", "DiffuReasonSASRec", 1, 0.045, 20.0), seeded("DR", "DiffuReasonSASRec", 2, 0.047, 20.0)]
    summary = run_benchmark.summarise(PROTOCOL, results)
    means = {e["name"]: e for e in summary["seed_means"]}
    dr = means["DR"]
    assert dr["seeds"] == [1, 2] and dr["baseline_seeds"] == [1, 2]
    assert dr["test"]["ndcg@10"]["mean"] == pytest.approx(0.046)
    assert dr["test"]["ndcg@10"]["std"] == pytest.approx(0.0014142, abs=1e-6)
    assert dr["test_change_vs_baseline"]["ndcg@10"] == pytest.approx(0.046 / 0.042 - 1)
    assert dr["train_time_ratio"] == pytest.approx(2.0)
    assert "baseline_seeds" not in means["SASRec"]
    table = run_benchmark.to_markdown(summary)
    assert "## Test metrics, mean ± std over seeds" in table
    assert "| DR | 1, 2 | " in table and "0.0460 ± 0.0014" in table and "+9.5%" in table


def test_a_run_whose_seeds_the_baseline_lacks_is_compared_with_all_baseline_seeds():
    results = [seeded("SASRec", "SASRec", 1, 0.040), seeded("SASRec", "SASRec", 2, 0.050),
               seeded("DR", "DiffuReasonSASRec", 7, 0.045)]
    dr = {e["name"]: e for e in run_benchmark.summarise(PROTOCOL, results)["seed_means"]}["DR"]
    assert dr["baseline_seeds"] == [1, 2] and dr["test"]["ndcg@10"]["std"] is None
    assert dr["test_change_vs_baseline"]["ndcg@10"] == pytest.approx(0.0)


def test_unfinished_runs_report_their_best_validation_epoch(tmp_path):
    (tmp_path / "DR-seed2020.log").write_text(
        "x INFO  epoch 0 training [time: 100.00s, train loss: 1]\n"
        "x INFO  epoch 0 evaluating [time: 1.0s, valid_score: 0.010000]\n"
        "x INFO  epoch 1 training [time: 120.00s, train loss: 1]\n"
        "x INFO  epoch 1 evaluating [time: 1.0s, valid_score: 0.030000]\n"
        "x INFO  epoch 2 training [time: 900.00s, train loss: 1]\n"
        "x INFO  epoch 2 evaluating [time: 1.0s, valid_score: 0.020000]\n", encoding="utf-8")
    rows = run_benchmark.unfinished_progress(PROTOCOL, tmp_path)
    assert [r["tag"] for r in rows] == ["DR-seed2020"]
    assert "3 epochs done" in rows[0]["error"] and "0.0300 (epoch 1)" in rows[0]["error"]
    assert "median 120 s per training epoch" in rows[0]["error"]
    table = run_benchmark.to_markdown(run_benchmark.summarise(PROTOCOL, rows))
    assert "| DR-seed2020 | | not finished: in progress" in table


def test_an_unfinished_staged_run_reports_its_current_stage_first_and_counts_a_resumed_epoch_once(tmp_path):
    def epoch(n: int, seconds: float, score: float) -> str:
        return (f"x INFO  epoch {n} training [time: {seconds:.2f}s, train loss: 1]\n"
                f"x INFO  epoch {n} evaluating [time: 1.0s, valid_score: {score:.6f}]\n")

    (tmp_path / "DR-seed2020.log").write_text(
        "x INFO  Training stage 'backbone' for up to 9 epochs\n" + epoch(0, 100, 0.02) + epoch(1, 100, 0.05)
        + "x INFO  Resuming from DR-seed2020-last.pth: stage 0, epoch 2\nx INFO  Training stage 'backbone' for up "
        "to 9 epochs\n" + epoch(2, 110, 0.04) + epoch(3, 100, 0.04) + "x INFO  Training stage 'train' for up to 9 "
        "epochs\n" + epoch(0, 200, 0.05) + epoch(1, 210, 0.06) + epoch(2, 220, 0.06) + epoch(2, 230, 0.06),
        encoding="utf-8")
    error = run_benchmark.unfinished_progress(PROTOCOL, tmp_path)[0]["error"]
    assert error == ("in progress: stage 'train': 3 epochs done, best valid N@10 so far 0.0600 (epoch 2), median 215 s "
                     "per training epoch; before it, stage 'backbone': 4 epochs done, best valid N@10 so far 0.0500 "
                     "(epoch 1), median 100 s per training epoch")


def test_staged_models_report_each_stage_and_its_ratio_to_the_baseline_epoch():
    lares = finished("LARES", "LARES", [20, 20, 20, 60, 60], 0.04)
    for h, stage in zip(lares["history"], ["spt"] * 3 + ["rpt"] * 2):
        h["stage"] = stage
    lares["runner_command"] = "python3 -m bench.run_benchmark p.yaml --only LARES"
    rows = run_benchmark.summarise(PROTOCOL, [finished("SASRec", "SASRec", [10, 10, 10], 0.04), lares])["rows"]
    assert rows[0]["stage_seconds_per_epoch"] == {}
    assert rows[1]["stage_seconds_per_epoch"] == {"spt": 20, "rpt": 60}
    assert rows[1]["stage_time_ratio"] == {"spt": 2.0, "rpt": 6.0}
    table = run_benchmark.to_markdown(run_benchmark.summarise(PROTOCOL, [lares]))
    assert "- LARES (seed 1): spt 20.0 s, rpt 60.0 s" in table
    assert "`python3 -m bench.run_benchmark p.yaml --only LARES`" in table


def test_summary_reports_the_machine_its_runs_ran_on():
    gpu = {"platform": "Linux-gpu", "cpu_count": 16}
    a, b = finished("SASRec", "SASRec", [1], 0.04), finished("DR", "DiffuReasonSASRec", [2], 0.05)
    a["machine"] = b["machine"] = gpu
    assert run_benchmark.summarise(PROTOCOL, [a, b])["machine"] == gpu
    b["machine"] = {"platform": "other"}
    assert run_benchmark.summarise(PROTOCOL, [a, b])["machine"] == run_benchmark.machine()


def test_comparison_takes_each_change_against_the_baseline_of_its_own_summary():
    compare = compare_results
    cpu = run_benchmark.summarise(PROTOCOL, [finished("SASRec", "SASRec", [10], 0.04), finished("DR", "DiffuReasonSASRec", [15], 0.05)])
    on_gpu = [finished("SASRec", "SASRec", [1], 0.05), finished("DR", "DiffuReasonSASRec", [2], 0.04)]
    for res in on_gpu:
        res["device"] = "cuda"
    gpu = run_benchmark.summarise({**PROTOCOL, "name": "g"}, on_gpu)
    combined = compare.combine([cpu, gpu])
    changes = [(r["source"], r["hardware"], round(r["test_change_vs_baseline"]["ndcg@10"], 3)) for r in combined["rows"]]
    assert changes == [("p", "CPU", 0.0), ("p", "CPU", 0.25), ("g", "GPU", 0.0), ("g", "GPU", -0.2)]
    table = compare.to_markdown(combined, "t", "", notes="## Disagreements\nnone")
    assert "| DR | g (GPU) |" in table and table.index("## Disagreements") > table.index("| DR | g (GPU) |")
    header, separator = [line for line in table.splitlines() if line.startswith("|")][:2]
    assert header.count("|") == separator.count("|")


def test_a_run_that_crashed_is_reported_as_failed_not_in_progress(tmp_path):
    (tmp_path / "DR-seed2020.log").write_text(
        "x INFO  epoch 0 training [time: 10.00s, train loss: 1]\n"
        "x INFO  epoch 0 evaluating [time: 1.0s, valid_score: 0.020000]\n"
        "Traceback (most recent call last):\n  File \"t.py\", line 1, in <module>\n"
        "ValueError: Training loss is nan\n", encoding="utf-8")
    rows = run_benchmark.unfinished_progress(PROTOCOL, tmp_path)
    assert rows[0]["error"].startswith("failed (ValueError: Training loss is nan): 1 epochs done")


def test_a_crash_whose_exception_names_its_module_is_reported_as_failed(tmp_path):
    (tmp_path / "DR-seed2020.log").write_text(
        "x INFO  epoch 0 evaluating [time: 1.0s, valid_score: 0.020000]\n"
        "Traceback (most recent call last):\n  File \"t.py\", line 1, in <module>\n"
        "recbole_diffureason.trainer.NonFiniteTrainingError: The training loss is inf at epoch 1\n", encoding="utf-8")
    rows = run_benchmark.unfinished_progress(PROTOCOL, tmp_path)
    assert rows[0]["error"].startswith("failed (recbole_diffureason.trainer.NonFiniteTrainingError: The training loss is inf")


def test_comparison_page_states_each_summarys_baseline_from_the_summary(tmp_path, monkeypatch):
    summary = run_benchmark.summarise(PROTOCOL, [finished("SASRec", "SASRec", [10], 0.04),
                                                 finished("DR", "DiffuReasonSASRec", [15], 0.05)])
    path = tmp_path / "p.json"

    def page() -> str:
        monkeypatch.setattr(sys, "argv", ["compare_results", str(path), "--name", "cmp", "--out", str(tmp_path)])
        assert compare_results.main() == 0
        return (tmp_path / "cmp.md").read_text(encoding="utf-8")

    path.write_text(json.dumps(summary), encoding="utf-8")
    assert "p (CPU) SASRec seed 1: 0.0400 / 0.0800" in page()
    summary["rows"][0]["test"] = {"ndcg@10": 0.0123, "recall@10": 0.0456}
    path.write_text(json.dumps(summary), encoding="utf-8")
    text = page()
    assert "p (CPU) SASRec seed 1: 0.0123 / 0.0456" in text and "0.0400 / 0.0800" not in text
    saved = json.loads((tmp_path / "cmp.json").read_text(encoding="utf-8"))
    assert saved["baselines"][0]["test"] == {"ndcg@10": 0.0123, "recall@10": 0.0456}
    summary["baseline"] = "DiffuReasonSASRec"  # the summary names its baseline model
    path.write_text(json.dumps(summary), encoding="utf-8")
    assert "p (CPU) DR seed 1: 0.0500 / 0.1000" in page()


SOURCE_PROTOCOL = {"name": "s", "dataset": "TinyBeauty", "runs": [],
                   "source": {"format": "text", "input": "Beauty/Beauty.txt"}}


def test_a_missing_source_folder_says_which_file_is_needed_where_it_comes_from_and_how_to_pass_it(tmp_path, monkeypatch):
    monkeypatch.delenv(run_benchmark.SOURCE_ROOT_ENV, raising=False)
    with pytest.raises(SystemExit) as err:
        run_benchmark.ensure_dataset(SOURCE_PROTOCOL, tmp_path / "dataset")
    message = str(err.value)
    assert "TinyBeauty is not converted yet" in message and "no source folder was given" in message
    assert "Beauty/Beauty.txt" in message and "RUCAIBox/CIKM2020-S3Rec" in message and "data/Beauty.txt" in message
    assert "--source-root DIR" in message and "RECBOLE_DR_SOURCE_ROOT=DIR" in message
    with pytest.raises(SystemExit) as err:  # a folder given that lacks the file
        run_benchmark.ensure_dataset(SOURCE_PROTOCOL, tmp_path / "dataset", tmp_path)
    assert f"it is not at {tmp_path / 'Beauty' / 'Beauty.txt'}" in str(err.value)
    instruments = {**SOURCE_PROTOCOL, "source": {"format": "lcrec", "input": "Instruments/Instruments.inter.json"}}
    with pytest.raises(SystemExit) as err:
        run_benchmark.ensure_dataset(instruments, tmp_path / "dataset")
    assert "Musical Instruments" in str(err.value)


@pytest.mark.parametrize("how", ["option", "environment"])
def test_the_source_input_is_resolved_against_the_source_folder(tmp_path, monkeypatch, how):
    source = tmp_path / "data" / "Beauty" / "Beauty.txt"
    source.parent.mkdir(parents=True)
    source.write_text("u1 i1 i2 i3\nu2 i2 i3\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(run_benchmark.SOURCE_ROOT_ENV, raising=False)
    if how == "environment":
        monkeypatch.setenv(run_benchmark.SOURCE_ROOT_ENV, "data")
    run_benchmark.ensure_dataset(SOURCE_PROTOCOL, tmp_path / "dataset", Path("data") if how == "option" else None)
    inter = tmp_path / "dataset" / "TinyBeauty" / "TinyBeauty.inter"
    assert inter.read_text(encoding="utf-8").splitlines()[1:] == ["u1\ti1\t0", "u1\ti2\t1", "u1\ti3\t2",
                                                                   "u2\ti2\t0", "u2\ti3\t1"]
    monkeypatch.delenv(run_benchmark.SOURCE_ROOT_ENV, raising=False)
    run_benchmark.ensure_dataset(SOURCE_PROTOCOL, tmp_path / "dataset")  # converted: no source folder needed


def test_a_protocol_with_sids_writes_them_once_after_converting(tmp_path, monkeypatch):
    folder = tmp_path / "data" / "Beauty"
    folder.mkdir(parents=True)
    (folder / "Beauty.txt").write_text("u1 i1 i2 i3\nu2 i2 i3\n", encoding="utf-8")
    (folder / "sids.tsv").write_text("item_id\tsid\ni1\t0 1\ni2\t0 2\ni3\t1 1\n", encoding="utf-8")
    monkeypatch.delenv(run_benchmark.SOURCE_ROOT_ENV, raising=False)
    protocol = {**SOURCE_PROTOCOL, "sids": {"input": "Beauty/sids.tsv", "codebook_size": 4}}
    run_benchmark.ensure_dataset(protocol, tmp_path / "dataset", tmp_path / "data")
    item = tmp_path / "dataset" / "TinyBeauty" / "TinyBeauty.item"
    assert item.read_text(encoding="utf-8").splitlines()[1:] == ["i1\t0 1\t1", "i2\t0 2\t1", "i3\t1 1\t1"]
    (folder / "sids.tsv").unlink()
    run_benchmark.ensure_dataset(protocol, tmp_path / "dataset", tmp_path / "data")  # tokenized: not read again


def test_every_protocol_source_is_relative_to_the_source_folder():
    for path in sorted((ROOT / "bench" / "protocols").glob("*.yaml")):
        source = run_benchmark.load_protocol(path).get("source")
        if source:
            parts = Path(source["input"]).parts
            assert not Path(source["input"]).is_absolute() and ".." not in parts, path.name


def test_no_result_file_holds_a_path_of_the_machine_that_made_it():
    # Paths are stored relative to the repository root; an absolute one names a folder of one machine only.
    absolute = re.compile(r"(?<![\w.~])/(?:tmp|home|root|work|usr|opt|mnt|var)/")
    files = sorted((ROOT / "docs" / "results").glob("*.*"))
    assert files
    for path in files:
        assert not absolute.search(path.read_text(encoding="utf-8")), path.name


def test_the_runner_records_its_module_command_and_starts_the_worker_as_a_module(tmp_path, monkeypatch):
    script = str(ROOT / "bench" / "run_benchmark.py")  # sys.argv[0] under ``python -m bench.run_benchmark``
    python = Path(sys.executable).name
    assert (run_benchmark.runner_command([script, "p.yaml", "--source-root", "/data", "--threads", "1",
                                          "--source-root=/other"])
            == f"{python} -m bench.run_benchmark p.yaml --threads 1")
    calls = []

    def fake_call(args, cwd, env, **kwargs):
        calls.append((args, cwd, env))
        spec = json.loads(args[-1])
        Path(spec["result_file"]).write_text(json.dumps({"tag": spec["tag"], "finished": True}), encoding="utf-8")
        return 0

    monkeypatch.setattr(run_benchmark.subprocess, "call", fake_call)
    monkeypatch.setattr(sys, "argv", [script, "p.yaml", "--source-root", "/data"])
    result = run_benchmark.run_one(PROTOCOL, PROTOCOL["runs"][0], 1, tmp_path, tmp_path / "dataset", 1)
    (args, cwd, env), = calls
    assert args[:3] == [sys.executable, "-m", "bench.worker"] and cwd == str(ROOT)
    assert env["PYTHONPATH"].split(run_benchmark.os.pathsep)[0] == str(ROOT)
    assert json.loads(args[3])["runner_command"] == f"{python} -m bench.run_benchmark p.yaml"
    assert result["finished"]
    assert run_benchmark.run_one(PROTOCOL, PROTOCOL["runs"][0], 1, tmp_path, tmp_path / "dataset", 1) == result
    assert len(calls) == 1  # a finished run is not started again


def test_run_paths_inside_the_repository_are_recorded_relative_to_it(tmp_path):
    inside = run_benchmark.ROOT / "bench" / "work" / "p"
    assert run_benchmark.repo_relative(inside / "SASRec-seed1.pth") == "bench/work/p/SASRec-seed1.pth"
    assert run_benchmark.repo_relative(tmp_path / "x.pth") == str((tmp_path / "x.pth").resolve())


def test_summary_only_without_runs_leaves_the_summary_alone(tmp_path, monkeypatch):
    protocol = tmp_path / "p.yaml"
    protocol.write_text(yaml.safe_dump(PROTOCOL), encoding="utf-8")
    monkeypatch.setattr(sys, "argv", ["run_benchmark", str(protocol), "--summary-only", "--work", str(tmp_path / "w"),
                                      "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="nothing written"):
        run_benchmark.main()
    assert not (tmp_path / "out").exists() and not (tmp_path / "w").exists()


@pytest.mark.parametrize("module", ["bench.run_benchmark", "bench.compare_results", "bench.evaluate_checkpoint",
                                    "bench.step_groups"])
def test_bench_scripts_run_as_modules_from_the_repository_root(module):
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr


def test_evaluate_checkpoint_scores_the_saved_weights_first_then_each_option(tiny_config, capsys):
    from bench import evaluate_checkpoint
    from recbole_diffureason.quick_start import run

    result = run("DiffuReasonSASRec", "tiny", config_dict=dict(tiny_config, epochs=1), cmd_args=[])
    capsys.readouterr()
    assert evaluate_checkpoint.main([result["saved_model_file"], "--set", "eval_init_noise=zero"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [line["option"] for line in lines] == [{}, {"eval_init_noise": "zero"}]
    assert all(line["split"] == "valid" for line in lines)
    # The saved weights on the validation split: the run's own best validation score.
    assert lines[0]["result"]["ndcg@10"] == pytest.approx(result["best_valid_result"]["ndcg@10"], abs=1e-4)


def test_evaluate_checkpoint_refuses_an_option_without_a_value():
    from bench import evaluate_checkpoint

    with pytest.raises(SystemExit, match="--set needs KEY=VALUE, got 'eval_noise_draws'"):
        evaluate_checkpoint.main(["model.pth", "--set", "eval_noise_draws"])


def _write_result(work: Path, result: dict) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{result['tag']}.json").write_text(json.dumps(result), encoding="utf-8")


def test_a_summary_rewritten_from_a_new_work_folder_keeps_the_earlier_finished_runs(tmp_path):
    """Work folders are lost with their machine; the rows of docs/results are not, and must survive a new run."""
    protocol = {**PROTOCOL, "seeds": [1, 2]}
    out, old_work, new_work = tmp_path / "out", tmp_path / "old", tmp_path / "new"
    base1 = {**finished("SASRec", "SASRec", [10], 0.04)}
    dr1 = {**finished("DR", "DiffuReasonSASRec", [20], 0.05)}
    _write_result(old_work, base1)
    _write_result(old_work, dr1)
    run_benchmark.write_summary(protocol, old_work, out, {})
    base2 = {**finished("SASRec", "SASRec", [12], 0.02), "tag": "SASRec-seed2", "seed": 2}
    _write_result(new_work, base2)
    summary = run_benchmark.write_summary(protocol, new_work, out, {})
    rows = {r["tag"]: r for r in summary["rows"]}
    assert list(rows) == ["SASRec-seed1", "SASRec-seed2", "DR-seed1"]  # protocol order
    assert rows["DR-seed1"]["test_change_vs_baseline"]["ndcg@10"] == pytest.approx(0.25)
    assert rows["SASRec-seed2"]["train_seconds_per_epoch"] == 12
    sasrec = {e["name"]: e for e in summary["seed_means"]}["SASRec"]
    assert sasrec["seeds"] == [1, 2] and sasrec["test"]["ndcg@10"]["mean"] == pytest.approx(0.03)
    assert json.loads((out / "p.json").read_text(encoding="utf-8"))["rows"] == summary["rows"]


def test_a_finished_run_in_the_work_folder_replaces_its_earlier_row_and_dropped_runs_go(tmp_path):
    out, work = tmp_path / "out", tmp_path / "w"
    _write_result(work, finished("SASRec", "SASRec", [10], 0.04))
    _write_result(work, finished("DR", "DiffuReasonSASRec", [20], 0.05))
    protocol = {**PROTOCOL, "seeds": [1]}
    run_benchmark.write_summary(protocol, work, out, {})
    rerun = tmp_path / "w2"
    _write_result(rerun, finished("SASRec", "SASRec", [30], 0.05))
    without_dr = {**protocol, "runs": [{"name": "SASRec", "model": "SASRec"}]}
    rows = run_benchmark.write_summary(without_dr, rerun, out, {})["rows"]
    assert [(r["tag"], r["train_seconds_per_epoch"]) for r in rows] == [("SASRec-seed1", 30)]


def test_an_unfinished_run_does_not_hide_its_earlier_finished_row(tmp_path):
    out, work = tmp_path / "out", tmp_path / "w"
    protocol = {**PROTOCOL, "seeds": [1]}
    _write_result(work, finished("SASRec", "SASRec", [10], 0.04))
    run_benchmark.write_summary(protocol, work, out, {})
    again = tmp_path / "w2"
    again.mkdir()
    (again / "SASRec-seed1.log").write_text("epoch 0 training [time: 9.0s, ...]\n", encoding="utf-8")
    rows = run_benchmark.write_summary(protocol, again, out, {})["rows"]
    assert [(r["tag"], r["finished"]) for r in rows] == [("SASRec-seed1", True)]


def test_seed_in_a_string_override_becomes_the_runs_seed():
    overrides = {"backbone_checkpoint": "bench/work/p/SASRec-seed{seed}.pth", "learning_rate": 0.001, "preset": "paper"}
    assert run_benchmark.seeded_overrides(overrides, 2022) == {
        "backbone_checkpoint": "bench/work/p/SASRec-seed2022.pth", "learning_rate": 0.001, "preset": "paper"}


def test_every_warm_started_run_comes_after_the_run_that_writes_its_checkpoint():
    """A runner goes through a protocol in order: a run reading another run's checkpoint must follow it."""
    for path in sorted((ROOT / "bench" / "protocols").glob("*.yaml")):
        protocol = yaml.safe_load(path.read_text(encoding="utf-8"))
        names = [run["name"] for run in protocol["runs"]]
        for position, run in enumerate(protocol["runs"]):
            source = str(run.get("overrides", {}).get("backbone_checkpoint") or "")
            if source:
                writer = re.search(r"/([^/]+)-seed\{seed\}\.pth$", source)
                assert writer, f"{path.name}: {run['name']} names no run's checkpoint by seed: {source}"
                assert writer.group(1) in names[:position], f"{path.name}: {run['name']} comes before {writer.group(1)}"


def test_every_protocol_key_is_one_its_run_uses():
    """A misspelt key in a protocol would only warn, and the benchmark would measure the default configuration
    under the misspelt row's name. A run's own overrides must all be used by its model; a ``common`` key may be
    unused by some models (LARES has no ``n_layers``) but must be used by one run of the protocol."""
    from recbole_diffureason.config import DRConfig

    problems = []
    for path in sorted((ROOT / "bench" / "protocols").glob("*.yaml")):
        protocol = yaml.safe_load(path.read_text(encoding="utf-8"))
        common = dict(protocol.get("common", {}))
        unused_common = set(common)
        for run in protocol["runs"]:
            overrides = dict(run.get("overrides", {}))
            overrides.pop("backbone_checkpoint", None)  # a file another run writes (checked by the test above)
            config = DRConfig(run["model"], protocol["dataset"], config_dict={**common, **overrides},
                              cmd_args=[], defer_warnings=True)
            unknown = set(config.unknown_keys)
            problems += [f"{path.name}: {run['name']} sets '{key}', unused by {run['model']}"
                         for key in sorted(unknown - set(common))]
            unused_common &= unknown
        problems += [f"{path.name}: common key '{key}' is used by no run" for key in sorted(unused_common)]
    assert not problems, "\n".join(problems)


def test_gain_analysis_tests_each_finished_seed_against_the_baseline_of_its_seed(tiny_config, workdir):
    from bench import gain_analysis
    from recbole_diffureason.quick_start import run

    work, out = workdir / "work", workdir / "out"
    work.mkdir()
    for name, model, seed in (("SASRec", "SASRec", 1), ("DR", "DiffuReasonSASRec", 1), ("SASRec", "SASRec", 2)):
        tag = f"{name}-seed{seed}"
        run(model, "tiny", config_dict=dict(tiny_config, seed=seed, saved_model_file=str(work / f"{tag}.pth")),
            cmd_args=[])
        (work / f"{tag}.json").write_text(json.dumps({"finished": True}), encoding="utf-8")
    (work / "DR-seed2.json").write_text(json.dumps({"finished": False}), encoding="utf-8")  # still training
    protocol = workdir / "p.yaml"
    protocol.write_text(yaml.safe_dump(dict(PROTOCOL, dataset="tiny", seeds=[1, 2])), encoding="utf-8")

    assert gain_analysis.main([str(protocol), "--runs", "DR", "--work", str(work), "--out", str(out)]) == 0
    summary = json.loads((out / "p_gains.json").read_text(encoding="utf-8"))
    assert [(r["run"], r["seed"]) for r in summary["rows"]] == [("DR", 1)]
    assert "Not finished, so not analysed: DR seed 2" in summary["description"]
    row = summary["rows"][0]
    assert row["baseline_file"].endswith("SASRec-seed1.pth") and row["model_file"].endswith("DR-seed1.pth")
    assert set(row["paired"]) == {"ndcg@10", "recall@10"} and row["paired"]["ndcg@10"]["rows"] == 80
    assert [s["step"] for s in row["thinking_steps"]][-1] == "mu"
    assert summary["command"].startswith("python -m bench.gain_analysis ")
    markdown = (out / "p_gains.md").read_text(encoding="utf-8")
    assert "| DR | 1 |" in markdown and "by user history length" in markdown
    (out / "p_gains.md").unlink()
    assert gain_analysis.main([str(protocol), "--runs", "DR", "--out", str(out), "--markdown-only"]) == 0
    assert (out / "p_gains.md").read_text(encoding="utf-8") == markdown


def test_gain_analysis_refuses_unknown_runs_and_protocols_without_a_baseline(workdir):
    from bench import gain_analysis

    protocol = workdir / "p.yaml"
    protocol.write_text(yaml.safe_dump(PROTOCOL), encoding="utf-8")
    with pytest.raises(SystemExit, match="has no run named DRX; its runs: SASRec, DR"):
        gain_analysis.main([str(protocol), "--runs", "DRX"])
    with pytest.raises(SystemExit, match="nothing written"):
        gain_analysis.main([str(protocol), "--runs", "DR", "--work", str(workdir / "empty")])
    protocol.write_text(yaml.safe_dump({k: v for k, v in PROTOCOL.items() if k != "baseline"}), encoding="utf-8")
    with pytest.raises(SystemExit, match="names no 'baseline'"):
        gain_analysis.main([str(protocol), "--runs", "DR"])


def test_step_scorers_score_each_step_and_their_mean_as_the_model_does(tiny_config):
    import torch

    from bench.step_groups import step_scorers
    from tests.helpers import build, first_batch

    _, model, _, _, test_data = build("DiffuReasonSASRec", tiny_config, thought_rec_weight=1.0,
                                      eval_latent="steps_mean")
    model.eval()
    batch = first_batch(test_data)
    scorers = step_scorers(model, 3, subsets=False)
    assert list(scorers) == ["tau_1", "tau_2", "tau_3", "mu", "steps_mean"]
    with torch.no_grad():
        assert torch.allclose(scorers["steps_mean"](batch), model.full_sort_predict(batch), atol=1e-5)
        assert torch.allclose(scorers["tau_1"](batch), model.score_all(model.encode(batch)[2]), atol=1e-5)
    assert len(step_scorers(model, 3, subsets=True)) == 15  # every non-empty subset of 4 steps
    log_prior = torch.linspace(-9, -1, model.n_items)
    shifted = step_scorers(model, 3, subsets=False, shifts=[0.5, -1], log_prior=log_prior)
    assert list(shifted)[-2:] == ["steps_mean +0.5 log p(item)", "steps_mean -1 log p(item)"]
    with torch.no_grad():
        mean = shifted["steps_mean"](batch)
        assert torch.allclose(shifted["steps_mean +0.5 log p(item)"](batch), mean + 0.5 * log_prior)
        assert torch.allclose(shifted["steps_mean -1 log p(item)"](batch), mean - log_prior)


def test_step_groups_compares_each_finished_seed_per_popularity_quarter(tiny_config, workdir):
    from bench import step_groups
    from recbole_diffureason.quick_start import run

    work, out = workdir / "work", workdir / "out"
    work.mkdir()
    for name, model in (("SASRec", "SASRec"), ("DR", "DiffuReasonSASRec")):
        tag = f"{name}-seed1"
        run(model, "tiny", config_dict=dict(tiny_config, seed=1, saved_model_file=str(work / f"{tag}.pth")),
            cmd_args=[])
        (work / f"{tag}.json").write_text(json.dumps({"finished": True}), encoding="utf-8")
    protocol = workdir / "p.yaml"
    protocol.write_text(yaml.safe_dump(dict(PROTOCOL, dataset="tiny", seeds=[1, 2])), encoding="utf-8")
    assert step_groups.main([str(protocol), "--runs", "DR", "--work", str(work), "--out", str(out),
                             "--popularity-shifts", "0.1", "0"]) == 0
    summary = json.loads((out / "p_step_groups.json").read_text(encoding="utf-8"))
    assert summary["split"] == "valid" and summary["not_finished"] == ["DR seed 2"]
    row = summary["rows"][0]
    assert list(row["scorings"]) == ["tau_1", "tau_2", "tau_3", "mu", "steps_mean", "steps_mean +0.1 log p(item)",
                                     "steps_mean +0 log p(item)"]
    assert sum(row["group_rows"]) == 80 and len(row["scorings"]["mu"]["group_gain_ndcg@10_pct"]) == len(row["groups"])
    assert set(row["baseline_shifted"]) == {"baseline +0.1 log p(item)", "baseline +0 log p(item)"}
    # A zero shift is the unshifted scoring, for the baseline and for the mean of the steps.
    assert row["baseline_shifted"]["baseline +0 log p(item)"]["ndcg@10"] == row["baseline_ndcg@10"]
    assert row["scorings"]["steps_mean +0 log p(item)"]["ndcg@10"] == row["scorings"]["steps_mean"]["ndcg@10"]
    markdown = (out / "p_step_groups.md").read_text(encoding="utf-8")
    assert "| steps_mean |" in markdown and "SASRec with the same shifts: +0.1 log p(item): NDCG@10" in markdown
    with pytest.raises(SystemExit, match="has no run named DRX"):
        step_groups.main([str(protocol), "--runs", "DRX", "--work", str(work)])
