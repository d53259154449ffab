"""Per-epoch diagnosis tables from the logs of a ``diagnose: True`` protocol (finished or not).

    python -m bench.diagnosis bench/work/beauty_cpu_diagnosis --batches 65 [--out FILE]

Reads every ``<run>-seed<seed>.log`` of the work folder: each epoch's training line (loss terms), its diagnostics
line (``diagnose: True``) and its validation score, and writes one markdown table per run. Loss terms are shown
as means per batch: logs written since RecBole's own train-loss line came back hold sums over the epoch's
batches (``terms (sum): ...``), divided here by ``--batches`` (Beauty, batch 2048: 65).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Dict, List

from bench.run_benchmark import VALID_SCORE

COLUMNS = [
    ("valid N@10", "valid_score"), ("CE mu", "rec"), ("CE h_L", "ce_h_last"), ("diff", "diff"),
    ("||h_L||", "norm_h_last"), ("||tau_R||", "norm_tau_R"), ("||c||", "norm_c"), ("||mu||", "mu_norm"),
    ("||E[target]||", "norm_target"), ("||eps||/||tau_R||", "noise_to_thought"), ("cos(mu,h_L)", "cos_mu_h_last"),
    ("grad rec", "grad_backbone_rec"), ("grad diff", "grad_backbone_diff"), ("grad align", "grad_backbone_align"),
    ("|dL_align/dmu|", "grad_mu_align"), ("mean 1/sigma", "inv_sigma"), ("groups w/ signal", "frac_groups_with_signal"),
]
PAIR = re.compile(r"([A-Za-z_@0-9]+): (-?[0-9.]+(?:e-?[0-9]+)?)")


def parse_log(path: Path, batches: int = 1) -> List[Dict[str, float]]:
    epochs: List[Dict[str, float]] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        summed = re.search(r"epoch (\d+) training \[time: ([0-9.]+)s.*terms \(sum\): (.*)$", line)
        training = summed or re.search(r"epoch (\d+) training \[time: ([0-9.]+)s, train loss[^:]*: (.*)\]", line)
        if training:
            record = {"epoch": float(training.group(1)), "seconds": float(training.group(2))}
            scale = batches if summed else 1
            record.update({k: float(v) / scale for k, v in PAIR.findall(training.group(3))})
            epochs.append(record)
        elif line.startswith("diagnostics:") and epochs:
            epochs[-1].update({k: float(v) for k, v in PAIR.findall(line)})
        else:
            valid = VALID_SCORE.search(line)
            if valid and epochs and int(epochs[-1]["epoch"]) == int(valid.group(1)):
                epochs[-1]["valid_score"] = float(valid.group(2))
    return epochs


def table(name: str, epochs: List[Dict[str, float]]) -> str:
    lines = [f"### {name}", "", "| epoch | " + " | ".join(c for c, _ in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 1) + "|"]
    for record in epochs:
        cells = [f"{record[key]:.4g}" if key in record else "" for _, key in COLUMNS]
        lines.append(f"| {int(record['epoch'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--batches", type=int, default=1, help="training batches per epoch (sums -> means)")
    args = parser.parse_args()
    text = "\n".join(table(log.stem, parse_log(log, args.batches)) for log in sorted(args.work.glob("*-seed*.log")))
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
