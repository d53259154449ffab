"""One table of every finished run from several benchmark summaries that share a protocol's settings.

    python -m bench.compare_results docs/results/beauty_cpu.json docs/results/beauty_gpu_baselines.json \
        --name beauty_comparison --title "..." --description "..." --notes bench/protocols/beauty_comparison.notes.md

Each row keeps the summary it came from, and its change against the baseline (SASRec) is taken against the
baseline of that same summary, i.e. measured on the same hardware in the same protocol; each summary's baseline
metrics are stated under the description, read from the summaries (the summary's ``baseline`` model, SASRec
where a summary does not name one). Time columns are left
out: summaries made on different machines (or with concurrent runs) do not give comparable seconds; each source
summary has its own. Writes docs/results/<name>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

from bench.run_benchmark import METRICS, fmt, percent, reference_tables, short_name

ROOT = Path(__file__).resolve().parent.parent
BASELINE_METRICS = ("ndcg@10", "recall@10")


def load(path: Path) -> Dict[str, Any]:
    with open(path, "r", encoding="utf-8") as f:
        summary = json.load(f)
    if "rows" not in summary or "protocol" not in summary:
        raise SystemExit(f"{path} is not a benchmark summary written by bench/run_benchmark.py.")
    return summary


def hardware(row: Dict[str, Any]) -> str:
    """GPU or CPU: the torch device the run reports."""
    return "GPU" if str(row.get("device", "cpu")).startswith("cuda") else "CPU"


def baselines(summary: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The finished runs of the summary's baseline model: what its rows' changes are taken against."""
    model = summary.get("baseline", "SASRec")
    return [{"source": summary["protocol"], "model": model, "name": r["name"], "seed": r["seed"],
             "hardware": hardware(r), "test": {m: (r.get("test") or {}).get(m) for m in BASELINE_METRICS}}
            for r in summary["rows"] if r.get("finished") and r.get("model") == model]


def baseline_line(combined: Dict[str, Any]) -> str:
    """One markdown line with every source summary's baseline test NDCG@10 / Recall@10."""
    parts = []
    for source in combined["sources"]:
        found = [b for b in combined["baselines"] if b["source"] == source["protocol"]]
        parts += [f"{b['source']} ({b['hardware']}) {b['name']} seed {b['seed']}: "
                  + " / ".join(fmt(b["test"].get(m)) for m in BASELINE_METRICS) for b in found]
        if not found:
            parts.append(f"{source['protocol']}: no finished {source.get('baseline', 'SASRec')} run")
    return ("Baselines (each row's change is against the baseline of its own summary), test NDCG@10 / Recall@10: "
            + "; ".join(parts) + ".")


def combine(summaries: List[Dict[str, Any]]) -> Dict[str, Any]:
    rows, papers, references, base = [], {}, {}, []
    for summary in summaries:
        base += baselines(summary)
        for r in summary["rows"]:
            if not r.get("finished"):
                continue
            rows.append({
                "name": r["name"], "model": r["model"], "seed": r["seed"], "source": summary["protocol"],
                "hardware": hardware(r), "epochs_trained": r.get("epochs_trained"), "best_epoch": r.get("best_epoch"),
                "test": r.get("test"), "valid": r.get("valid"),
                "test_change_vs_baseline": r.get("test_change_vs_baseline") or {},
            })
        papers.update(summary.get("paper", {}))
        references.update(summary.get("reference", {}))
    return {"rows": rows, "paper": papers, "reference": references, "baselines": base,
            "sources": [{"protocol": s["protocol"], "baseline": s.get("baseline", "SASRec"), "command": s.get("command"),
                         "machine": s.get("machine")} for s in summaries]}


def to_markdown(combined: Dict[str, Any], title: str, description: str, notes: str = "") -> str:
    short = [short_name(m) for m in METRICS]
    lines = [f"# {title}", "", description.strip(), "", baseline_line(combined), "",
             "| run | measured in | test " + " | test ".join(short) + " | valid N@10 | epochs | test N@10 vs SASRec | test R@10 vs SASRec |",
             "|" + "---|" * (len(METRICS) + 6)]
    for r in combined["rows"]:
        test, change = r.get("test") or {}, r["test_change_vs_baseline"]
        lines.append(f"| {r['name']} | {r['source']} ({r['hardware']}) | " + " | ".join(fmt(test.get(m)) for m in METRICS)
                     + f" | {fmt((r.get('valid') or {}).get('ndcg@10'))} | {r['epochs_trained']} | "
                     f"{percent(change.get('ndcg@10'))} | {percent(change.get('recall@10'))} |")
    lines += reference_tables(combined)
    if notes.strip():
        lines += ["", notes.strip()]
    lines += ["", "Sources:", ""] + [f"- {s['protocol']}: `{s['command']}`" for s in combined["sources"]]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("summaries", nargs="+", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--title", default=None)
    parser.add_argument("--description", default="")
    parser.add_argument("--notes", type=Path, default=None, help="markdown appended after the tables")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    args = parser.parse_args()
    combined = combine([load(p) for p in args.summaries])
    notes = args.notes.read_text(encoding="utf-8") if args.notes else ""
    combined.update(description=args.description, notes=notes)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / f"{args.name}.json", "w", encoding="utf-8") as f:
        json.dump(combined, f, indent=2)
    text = to_markdown(combined, args.title or args.name, args.description, notes)
    with open(args.out / f"{args.name}.md", "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
