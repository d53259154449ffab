"""The benchmark runner's bookkeeping: timings, ratios to the baseline, progress of unfinished runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("run_benchmark", ROOT / "bench" / "run_benchmark.py")
run_benchmark = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_benchmark)

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


def test_staged_models_report_each_stage_and_its_ratio_to_the_baseline_epoch():
    lares = finished("LARES", "LARES", [20, 20, 20, 60, 60], 0.04)
    for h, stage in zip(lares["history"], ["spt"] * 3 + ["rpt"] * 2):
        h["stage"] = stage
    lares["runner_command"] = "python3 bench/run_benchmark.py p.yaml --only LARES"
    rows = run_benchmark.summarise(PROTOCOL, [finished("SASRec", "SASRec", [10, 10, 10], 0.04), lares])["rows"]
    assert rows[0]["stage_seconds_per_epoch"] == {}
    assert rows[1]["stage_seconds_per_epoch"] == {"spt": 20, "rpt": 60}
    assert rows[1]["stage_time_ratio"] == {"spt": 2.0, "rpt": 6.0}
    table = run_benchmark.to_markdown(run_benchmark.summarise(PROTOCOL, [lares]))
    assert "- LARES (seed 1): spt 20.0 s, rpt 60.0 s" in table
    assert "`python3 bench/run_benchmark.py p.yaml --only LARES`" in table


def test_summary_reports_the_machine_its_runs_ran_on():
    gpu = {"platform": "Linux-gpu", "cpu_count": 16}
    a, b = finished("SASRec", "SASRec", [1], 0.04), finished("DR", "DiffuReasonSASRec", [2], 0.05)
    a["machine"] = b["machine"] = gpu
    assert run_benchmark.summarise(PROTOCOL, [a, b])["machine"] == gpu
    b["machine"] = {"platform": "other"}
    assert run_benchmark.summarise(PROTOCOL, [a, b])["machine"] == run_benchmark.machine()


def test_comparison_takes_each_change_against_the_baseline_of_its_own_summary():
    spec = importlib.util.spec_from_file_location("compare_results", ROOT / "bench" / "compare_results.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
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
