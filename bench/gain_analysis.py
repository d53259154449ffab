"""Where a protocol's gains over its baseline come from, and how far each is from noise.

    python -m bench.gain_analysis bench/protocols/beauty_cpu_seeds.yaml --runs DR-anchor-aux-bbfirst DR-anchor-aux-warm

(from the repository root, after the runs finished). For every finished seed of each named run and the
protocol's ``baseline`` run of the same seed, ``analyze`` (recbole_diffureason/analysis.py) scores both
checkpoints on the test split row by row and writes, to docs/results/<protocol>_gains.json and .md:

* the paired test of the overall gain: relative gain with a paired-bootstrap 95% interval over the test users,
  paired t and Wilcoxon p-values, and how many users each model ranks better;
* the thinking steps (tau_1 .. tau_R and mu scored alone; paper Fig. 4);
* the gain per quarter of users by history length and by target-item popularity (paper Fig. 5).

The interval is over test users for one trained model; the spread over seeds (the benchmark summary) is the
other source of noise. This reads the test split of models already chosen on validation: it explains results
and chooses nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bench.run_benchmark import ROOT, load_protocol, machine, percent, repo_relative, run_seeds

METRICS = ("ndcg@10", "recall@10")


def finished_checkpoint(work: Path, tag: str) -> Optional[str]:
    """The best-valid checkpoint of a finished run, relative to the repository root; None if unfinished."""
    result = work / f"{tag}.json"
    if not result.is_file() or not json.loads(result.read_text(encoding="utf-8")).get("finished"):
        return None
    return repo_relative(work / f"{tag}.pth")


def finished_pairs(protocol_path: Path, runs: Sequence[str], work: Optional[Path] = None
                   ) -> Tuple[Dict[str, Any], str, Path, List[Tuple[str, int, str, str]], List[str]]:
    """The protocol, its baseline run name, its work folder, ``(run, seed, checkpoint, baseline checkpoint)`` of
    every finished seed of ``runs`` whose baseline seed finished too, and the ``"<run> seed <seed>"`` left out."""
    protocol = load_protocol(protocol_path)
    baseline = protocol.get("baseline")
    if not baseline:
        raise SystemExit(f"{protocol_path}: the protocol names no 'baseline' run to compare against.")
    known = {run["name"]: run for run in protocol["runs"]}
    unknown = [name for name in runs if name not in known]
    if unknown:
        raise SystemExit(f"{protocol_path} has no run named {', '.join(unknown)}; its runs: {', '.join(known)}.")
    work = (work or ROOT / "bench" / "work" / protocol["name"]).resolve()
    pairs, skipped = [], []
    for name in runs:
        for seed in run_seeds(protocol, known[name]):
            model_file = finished_checkpoint(work, f"{name}-seed{seed}")
            baseline_file = finished_checkpoint(work, f"{baseline}-seed{seed}")
            if model_file and baseline_file:
                pairs.append((name, seed, model_file, baseline_file))
            else:
                skipped.append(f"{name} seed {seed}")
    return protocol, baseline, work, pairs, skipped


def analyse_pair(model_file: str, baseline_file: str, out_dir: Path) -> Dict[str, Any]:
    from recbole_diffureason.analysis import analyze

    start = time.time()
    report = analyze(model_file, baseline_file=baseline_file, out_dir=str(out_dir), plot=False)
    return {
        "model_file": model_file, "baseline_file": baseline_file, "seconds": round(time.time() - start, 1),
        "paired": report["paired"], "thinking_steps": report.get("thinking_steps"),
        "groups": {kind: [{"group": row["group"], "rows": row["rows"],
                           **{f"gain_{m}_pct": row[f"gain_{m}_pct"] for m in METRICS}} for row in group["rows"]]
                   for kind, group in report["groups"].items()},
    }


def pct(value: Optional[float]) -> str:
    """A gain given in percent (``relative_gain_pct``), written as run_benchmark writes its fractions."""
    return percent(None if value is None else value / 100)


def p_value(value: float) -> str:
    return f"{value:.2g}" if value >= 1e-4 else "<1e-4"


def mean_of(values: List[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return statistics.mean(present) if present else None


def to_markdown(summary: Dict[str, Any]) -> str:
    lines = [f"# Where the gains over {summary['baseline']} come from: {summary['protocol']}", "",
             summary["description"], "", f"Command: `{summary['command']}`", "",
             "## The paired test per seed (test split, every user)", "",
             "| run | seed | NDCG@10 gain [95% CI] | p (t / Wilcoxon) | users better / worse | "
             "Recall@10 gain [95% CI] | p (t / Wilcoxon) |", "|---|---|---|---|---|---|---|"]
    for row in summary["rows"]:
        n, r = row["paired"]["ndcg@10"], row["paired"]["recall@10"]
        lines.append(
            f"| {row['run']} | {row['seed']} | {pct(n['gain_pct'])} [{pct(n['gain_pct_ci95'][0])}, "
            f"{pct(n['gain_pct_ci95'][1])}] | {p_value(n['p_paired_t'])} / {p_value(n['p_wilcoxon'])} | "
            f"{n['rows_better']} / {n['rows_worse']} | {pct(r['gain_pct'])} [{pct(r['gain_pct_ci95'][0])}, "
            f"{pct(r['gain_pct_ci95'][1])}] | {p_value(r['p_paired_t'])} / {p_value(r['p_wilcoxon'])} |")
    lines += ["", "## Thinking steps: each thought scored alone, and mu (NDCG@10, test)", ""]
    for row in summary["rows"]:
        steps = row["thinking_steps"] or []
        lines.append(f"* {row['run']} seed {row['seed']}: " + ", ".join(
            f"{s['step']} {s['ndcg@10']:.4f}" for s in steps) + f"; {summary['baseline']} "
            f"{row['paired']['ndcg@10']['baseline']:.4f}")
    for kind, what in (("history_length", "user history length"), ("target_popularity", "target-item popularity")):
        lines += ["", f"## NDCG@10 gain by {what} (quantile groups of the test users, ties kept in one group; "
                      "mean over seeds, each seed)", "",
                  "| run | group (values) | mean gain | per seed |", "|---|---|---|---|"]
        for run in summary["runs"]:
            rows = [r for r in summary["rows"] if r["run"] == run]
            if not rows:
                continue
            for g, group in enumerate(rows[0]["groups"][kind]):
                gains = [r["groups"][kind][g]["gain_ndcg@10_pct"] if len(r["groups"][kind]) > g else None
                         for r in rows]
                lines.append(f"| {run} | {group['group']} ({group['rows']} users) | {pct(mean_of(gains))} | "
                             + ", ".join(pct(v) for v in gains) + " |")
    lines += ["", f"Machine: {summary['machine']}; {summary['seconds']:.0f} s in all.", ""]
    return "\n".join(lines)


def rewrite_markdown(stem: Path) -> int:
    path = stem.with_suffix(".json")
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: run without --markdown-only first.")
    stem.with_suffix(".md").write_text(to_markdown(json.loads(path.read_text(encoding="utf-8"))), encoding="utf-8")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("protocol", type=Path)
    parser.add_argument("--runs", nargs="+", required=True, help="run names of the protocol to compare")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default bench/work/<protocol>)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results", help="where the summary goes")
    parser.add_argument("--markdown-only", action="store_true",
                        help="rewrite the .md from the .json already in --out; analyse nothing")
    args = parser.parse_args(argv)
    if args.markdown_only:
        return rewrite_markdown(args.out / f"{load_protocol(args.protocol)['name']}_gains")

    protocol, baseline, work, pairs, skipped = finished_pairs(args.protocol, args.runs, args.work)
    start = time.time()
    rows = []
    for name, seed, model_file, baseline_file in pairs:
        print(f"[{name}-seed{seed}] against {baseline}-seed{seed}", flush=True)
        pair = analyse_pair(model_file, baseline_file, work / "analysis" / f"{name}-seed{seed}")
        rows.append({"run": name, "seed": seed, **pair})
    if not rows:
        raise SystemExit(f"No finished seed of {', '.join(args.runs)} has a finished {baseline} of the same seed "
                         f"in {work}; nothing written.")
    description = (f"Test split of the best-valid checkpoints of {protocol['name']} (chosen on validation; this "
                   f"chooses nothing). Gains are relative to {baseline} of the same seed; the 95% interval is a "
                   f"paired bootstrap over test users (2000 draws), so it measures the test-set noise of one "
                   f"trained model; the spread over seeds is in docs/results/{protocol['name']}.md."
                   + (f" Not finished, so not analysed: {', '.join(skipped)}." if skipped else ""))
    summary = {"protocol": protocol["name"], "baseline": baseline, "runs": list(args.runs),
               "description": description,
               "command": " ".join(["python", "-m", "bench.gain_analysis"] + list(sys.argv[1:] if argv is None else argv)), "machine": machine(),
               "seconds": round(time.time() - start, 1), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{protocol['name']}_gains"
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    markdown = to_markdown(summary)
    stem.with_suffix(".md").write_text(markdown, encoding="utf-8")
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
