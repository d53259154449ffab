"""Validation curves of sweep runs from their RecBole logs (runs that a time limit cut still have logs).

    python -m bench.summarise_sweep_logs OUT_NAME LOG_DIR [LOG_DIR ...]

Writes docs/results/OUT_NAME.json and .md: per run, the valid NDCG@10 after every epoch, the best value and
its epoch, and the last training losses and diagnostics. Only validation metrics exist in these logs.
"""

import json
import re
import sys
from pathlib import Path

from bench.run_benchmark import VALID_SCORE as SCORE

ROOT = Path(__file__).resolve().parent.parent
LOSS = re.compile(r"epoch (\d+) training \[time: ([0-9.]+)s, train loss \(mean per batch\): (.*)\]")
DIAG = re.compile(r"diagnostics: (.*)")


def parse(log: Path) -> dict:
    text = log.read_text(encoding="utf-8", errors="replace")
    scores = [float(v) for _, v in SCORE.findall(text)]
    losses = LOSS.findall(text)
    diags = DIAG.findall(text)
    best = max(range(len(scores)), key=lambda i: scores[i]) if scores else None
    return {
        "run": log.stem.rsplit("-seed", 1)[0],
        "valid_ndcg10_per_epoch": scores,
        "best_valid_ndcg10": scores[best] if scores else None,
        "best_epoch": best,
        "epochs_logged": len(scores),
        "finished": "test result" in text or "best valid" in text,
        "last_train": losses[-1][2] if losses else None,
        "last_train_seconds": float(losses[-1][1]) if losses else None,
        "last_diagnostics": diags[-1] if diags else None,
    }


def main() -> int:
    name, dirs = sys.argv[1], [Path(d) for d in sys.argv[2:]]
    sweeps = {d.name: [parse(log) for log in sorted(d.glob("*.log"))] for d in dirs}
    out = ROOT / "docs" / "results"
    with open(out / f"{name}.json", "w", encoding="utf-8") as f:
        json.dump(sweeps, f, indent=2)
    lines = [f"# {name}: validation-only sweeps (no test metric computed)", ""]
    for sweep, runs in sweeps.items():
        lines += [f"## {sweep}", "", "| run | best valid N@10 | best epoch | epochs | valid N@10 at epochs 5/10/15/20/25 | last train losses |",
                  "|---|---|---|---|---|---|"]
        for r in runs:
            at = " / ".join(f"{r['valid_ndcg10_per_epoch'][e]:.4f}" if e < r["epochs_logged"] else "-" for e in (5, 10, 15, 20, 25))
            lines.append(f"| {r['run']} | {r['best_valid_ndcg10']:.4f} | {r['best_epoch']} | {r['epochs_logged']} | {at} | {r['last_train']} |")
        lines.append("")
    (out / f"{name}.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
