"""Seeded metrics of every model on ml-100k, recorded before and after a refactor that must not change them.

    python -m bench.seeded_equivalence record --out before.json
    python -m bench.seeded_equivalence record --out after.json
    python -m bench.seeded_equivalence compare before.json after.json --name refactor_equivalence

``record`` trains each case for a short, fixed schedule with seed 2020 on one thread and keeps the full-precision
validation and test metrics and every epoch's loss terms; ``compare`` writes docs/results/<name>.{json,md} and
fails if any number differs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

SMALL = {
    "hidden_size": 32, "inner_size": 64, "n_layers": 1, "n_heads": 2, "MAX_ITEM_LIST_LENGTH": 20,
    "train_batch_size": 1024, "eval_batch_size": 4096, "epochs": 1, "seed": 2020, "show_progress": False,
    "state": "ERROR", "metrics": ["Recall", "NDCG"], "topk": [10], "valid_metric": "NDCG@10",
}
DR_SMALL = {"think_heads": 2, "diffusion_steps": 4, "group_size": 4}
CASES: Dict[str, Dict[str, Any]] = {
    "SASRec": {"model": "SASRec", "config": {}},
    "DiffuReasonSASRec": {"model": "DiffuReasonSASRec", "config": DR_SMALL},
    "DiffuReasonSASRec-with_kl": {"model": "DiffuReasonSASRec", "config": {**DR_SMALL, "ablation": "with_kl", "epochs": 2}},
    "DiffuReasonSASRec-two_stage_kl": {"model": "DiffuReasonSASRec",
                                       "config": {**DR_SMALL, "ablation": "two_stage", "kl_weight": 0.1,
                                                  "stage1_epochs": 1}},
    "ReaRecERL": {"model": "ReaRecERL", "config": {"train_batch_size": 1024}},
    "ReaRecPRL": {"model": "ReaRecPRL", "config": {"warmup": 0}},
    "LARES": {"model": "LARES", "config": {"spt_epochs": 1, "rpt_epochs": 1, "group_size": 2}},
}


def run_case(name: str, workdir: Path) -> Dict[str, Any]:
    import torch

    from recbole_diffureason.quick_start import run

    torch.set_num_threads(1)
    case = CASES[name]
    config = {**SMALL, **case["config"], "checkpoint_dir": str(workdir / "saved"),
              "results_file": str(workdir / f"{name}.json")}
    os.chdir(workdir)
    start = time.time()
    result = run(case["model"], "ml-100k", config_dict=config, cmd_args=[])
    return {
        "model": case["model"], "config": case["config"],
        "best_valid_result": dict(result["best_valid_result"] or {}), "test_result": dict(result["test_result"] or {}),
        "losses": [h.get("losses", {}) for h in result["history"]],
        "seconds": time.time() - start,
    }


def record(out: Path, only: List[str]) -> None:
    results = json.loads(out.read_text()) if out.is_file() else {"cases": {}}
    results.update(machine=platform.platform(), python=platform.python_version())
    for name in only or list(CASES):
        with tempfile.TemporaryDirectory() as tmp:
            code = ("import json,sys; from pathlib import Path; from bench.seeded_equivalence import run_case; "
                    f"print('RESULT' + json.dumps(run_case({name!r}, Path({tmp!r}))))")
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()})
        lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
        if proc.returncode or not lines:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
        results["cases"][name] = json.loads(lines[-1][len("RESULT"):])
        print(name, results["cases"][name]["test_result"], flush=True)
        out.write_text(json.dumps(results, indent=2))


def differences(before: Dict[str, Any], after: Dict[str, Any]) -> List[str]:
    diffs = []
    for name, old in before["cases"].items():
        new = after["cases"].get(name)
        if new is None:
            diffs.append(f"{name}: missing after")
            continue
        for field in ("best_valid_result", "test_result", "losses"):
            if old[field] != new[field]:
                diffs.append(f"{name}: {field} {old[field]} != {new[field]}")
    return diffs


def compare(before_path: Path, after_path: Path, name: str, out_dir: Path) -> int:
    before, after = json.loads(before_path.read_text()), json.loads(after_path.read_text())
    diffs = differences(before, after)
    rows = ["| case | model | valid NDCG@10 before | after | test NDCG@10 before | after | test Recall@10 before | after | identical |",
            "|---|---|---|---|---|---|---|---|---|"]
    for case, old in before["cases"].items():
        new = after["cases"].get(case, {})
        same = not any(d.startswith(case + ":") for d in diffs)
        get = lambda r, split, m: (r.get(split) or {}).get(m)
        rows.append(f"| {case} | {old['model']} | {get(old, 'best_valid_result', 'ndcg@10')} | {get(new, 'best_valid_result', 'ndcg@10')} "
                    f"| {get(old, 'test_result', 'ndcg@10')} | {get(new, 'test_result', 'ndcg@10')} "
                    f"| {get(old, 'test_result', 'recall@10')} | {get(new, 'test_result', 'recall@10')} | {'yes' if same else 'NO'} |")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps({"before": before, "after": after, "differences": diffs}, indent=2))
    text = "\n".join([f"# {name}", "", __doc__.strip().splitlines()[0], "",
                      f"Settings: ml-100k, seed 2020, one thread, {json.dumps(SMALL)}; per case: see the JSON.",
                      "Identical means the validation and test metrics and every epoch's loss terms are equal to the last bit.",
                      "", *rows, "", f"Before: {before.get('machine')}; after: {after.get('machine')}.", ""])
    (out_dir / f"{name}.md").write_text(text)
    print(text)
    for d in diffs:
        print("DIFF", d)
    return 1 if diffs else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("--out", type=Path, required=True)
    rec.add_argument("--only", nargs="*", default=[])
    cmp_ = sub.add_parser("compare")
    cmp_.add_argument("before", type=Path)
    cmp_.add_argument("after", type=Path)
    cmp_.add_argument("--name", default="refactor_equivalence")
    cmp_.add_argument("--out", type=Path, default=Path("docs/results"))
    args = parser.parse_args()
    if args.command == "record":
        record(args.out, args.only)
        return 0
    return compare(args.before, args.after, args.name, args.out)


if __name__ == "__main__":
    sys.exit(main())
