"""Which reasoning step gains on which targets: each step of DiffuReason scored alone (and, with ``--subsets``, the
mean latent of every subset of steps) against the protocol's baseline, overall and per target-popularity quarter.

    python -m bench.step_groups bench/protocols/beauty_cpu_seeds.yaml --runs DR-anchor-aux-warm-thoughtce-mean --subsets

(from the repository root, after the runs finished). The validation split is the default: it is where a choice
between scorings may be made (``--split test`` explains a chosen model and chooses nothing). The steps are
``tau_1 = h_L .. tau_R`` and ``mu`` (one seeded noise draw, as evaluation scores it); ``steps_mean`` below is their
mean latent, what ``eval_latent: steps_mean`` scores; ``--popularity-shifts C ...`` also scores ``steps_mean + C log
p(item)``, and the baseline with the same shifts, to see whether moving the ranking toward or away from popular
items would gain, and whether for both models alike (then it is calibration, not reasoning). Writes
docs/results/<protocol>_step_groups.{json,md}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

from bench.gain_analysis import finished_pairs
from bench.run_benchmark import ROOT, machine

GROUPS = 4


def step_scorers(model, steps: int, subsets: bool, shifts: Sequence[float] = (),
                 log_prior: Optional[Any] = None) -> Dict[str, Callable]:
    """Scorers of each step alone, of the mean of all steps and, with ``subsets``, of every other subset's mean.
    Each of ``shifts`` adds a scorer ``steps_mean + c log p(item)``: the mean of the steps moved toward (c > 0) or
    away from (c < 0) the items popular as training targets (``log_prior``: log p(item) per item id)."""
    import torch

    cache: Dict[str, Any] = {"batch": None, "steps": None}

    def latents(interaction):
        if cache["batch"] is not interaction:  # identity, not id(): see analysis.thought_scorers
            out = model.forward(interaction, draw=0)
            cache["batch"], cache["steps"] = interaction, torch.cat([out.thoughts, out.policy.mu.unsqueeze(1)], 1)
        return cache["steps"]

    names = [f"tau_{r + 1}" for r in range(steps)] + ["mu"]
    chosen = [(i,) for i in range(len(names))] + [tuple(range(len(names)))]
    if subsets:
        chosen = [c for n in range(1, len(names) + 1) for c in itertools.combinations(range(len(names)), n)]
    scorers = {("steps_mean" if len(c) == len(names) else "+".join(names[i] for i in c)):
               (lambda interaction, c=list(c): model.score_all(latents(interaction)[:, c].mean(1))) for c in chosen}
    for shift in shifts:
        scorers[shifted_name("steps_mean", shift)] = shifted(scorers["steps_mean"], shift, log_prior)
    return scorers


def shifted(scorer: Callable, shift: float, log_prior) -> Callable:
    """``scorer`` with ``shift * log p(item)`` added to every item's score."""
    return lambda interaction: scorer(interaction) + shift * log_prior


def shifted_name(scoring: str, shift: float) -> str:
    return f"{scoring} {shift:+g} log p(item)"


def log_target_prior(popularity: np.ndarray):
    """log p(item) from how often each item is a training target, add-one smoothed, as a tensor over item ids."""
    import torch

    counts = torch.as_tensor(popularity, dtype=torch.float64) + 1
    return (counts / counts.sum()).log().float()


def compare(model_file: str, baseline_file: str, split: str, subsets: bool, shifts: Sequence[float] = ()) -> Dict[str, Any]:
    from recbole_diffureason.analysis import _load, evaluate_rows, item_popularity, quantile_groups

    _, baseline, _, train_data, eval_data = _load(baseline_file, None, split)
    popularity = item_popularity(train_data)
    log_prior = log_target_prior(popularity)
    # The baseline gets the same shifts: a shift that helps both models is calibration, not what reasoning adds.
    base_scorers = {"baseline": baseline.full_sort_predict, **{
        shifted_name("baseline", c): shifted(baseline.full_sort_predict, c, log_prior) for c in shifts}}
    base = evaluate_rows(baseline, eval_data, base_scorers, 10)
    config, model, _, _, model_data = _load(model_file, None, split)
    scorers = step_scorers(model, int(config["reasoning_steps"]), subsets, shifts, log_prior)
    rows = evaluate_rows(model, model_data, scorers, 10)
    position = {user: i for i, user in enumerate(rows["user"])}
    order = np.array([position[user] for user in base["user"]])
    if not (rows["target"][order] == base["target"]).all():
        raise SystemExit(f"{model_file} and {baseline_file} do not score the same {split} targets.")
    group, labels = quantile_groups(popularity[base["target"]], GROUPS)
    result: Dict[str, Any] = {"model_file": model_file, "baseline_file": baseline_file, "groups": labels,
                              "group_rows": np.bincount(group, minlength=len(labels)).tolist(), "scorings": {},
                              "baseline_shifted": {shifted_name("baseline", c): {
                                  f"{metric}@10": float(base[shifted_name("baseline", c)][metric].mean())
                                  for metric in ("ndcg", "recall")} for c in shifts}}
    for metric in ("ndcg", "recall"):
        ours_all = {name: rows[name][metric][order] for name in rows if name not in ("user", "target")}
        theirs = base["baseline"][metric]
        result[f"baseline_{metric}@10"] = float(theirs.mean())
        for name, ours in ours_all.items():
            entry = result["scorings"].setdefault(name, {})
            entry[f"{metric}@10"] = float(ours.mean())
            entry[f"gain_{metric}@10_pct"] = float((ours.mean() / theirs.mean() - 1) * 100)
            entry[f"group_gain_{metric}@10_pct"] = [
                float((ours[group == g].mean() / theirs[group == g].mean() - 1) * 100) for g in range(len(labels))]
    return result


def to_markdown(summary: Dict[str, Any]) -> str:
    lines = [f"# Each reasoning step against {summary['baseline']}, by target popularity: {summary['protocol']}", "",
             f"Split: **{summary['split']}**. Each step scored alone (tau_1 = h_L .. tau_R, mu) and mean latents of "
             "steps (`steps_mean` = all of them, what `eval_latent: steps_mean` scores), against the baseline of the "
             "same seed; the quarters are quantile groups of the users by how often their target is a training "
             "target (ties kept in one group), rarest first.", "", f"Command: `{summary['command']}`", ""]
    for row in summary["rows"]:
        groups = ", ".join(f"{label} ({n})" for label, n in zip(row["groups"], row["group_rows"]))
        lines += [f"## {row['run']}, seed {row['seed']}", "",
                  f"{summary['baseline']}: NDCG@10 {row['baseline_ndcg@10']:.4f}, Recall@10 "
                  f"{row['baseline_recall@10']:.4f}. Quarters (target seen n times, users): {groups}.", ""]
        if row.get("baseline_shifted"):
            lines += [f"{summary['baseline']} with the same shifts: " + "; ".join(
                f"{name.replace('baseline ', '')}: NDCG@10 {s['ndcg@10']:.4f}, Recall@10 {s['recall@10']:.4f}"
                for name, s in row["baseline_shifted"].items()) + ".", ""]
        lines += ["| scoring | NDCG@10 | gain | Recall@10 | gain | NDCG@10 gain per quarter, rarest first |",
                  "|---|---|---|---|---|---|"]
        for name, s in row["scorings"].items():
            lines.append(f"| {name} | {s['ndcg@10']:.4f} | {s['gain_ndcg@10_pct']:+.1f}% | {s['recall@10']:.4f} | "
                         f"{s['gain_recall@10_pct']:+.1f}% | "
                         + " / ".join(f"{g:+.1f}%" for g in s["group_gain_ndcg@10_pct"]) + " |")
        lines.append("")
    lines += [f"Machine: {summary['machine']}; {summary['seconds']:.0f} s in all.", ""]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("protocol", type=Path)
    parser.add_argument("--runs", nargs="+", required=True, help="DiffuReason run names of the protocol")
    parser.add_argument("--split", choices=("valid", "test"), default="valid")
    parser.add_argument("--subsets", action="store_true", help="also score the mean latent of every subset of steps")
    parser.add_argument("--popularity-shifts", nargs="+", type=float, default=[], metavar="C",
                        help="also score steps_mean + C log p(item) for each C (C < 0: away from popular items)")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default bench/work/<protocol>)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results", help="where the summary goes")
    args = parser.parse_args(argv)
    protocol, baseline, _, pairs, skipped = finished_pairs(args.protocol, args.runs, args.work)
    start, rows = time.time(), []
    for name, seed, model_file, baseline_file in pairs:
        print(f"[{name}-seed{seed}] against {baseline}-seed{seed} ({args.split})", flush=True)
        rows.append({"run": name, "seed": seed, **compare(model_file, baseline_file, args.split, args.subsets,
                                                                args.popularity_shifts)})
    if not rows:
        raise SystemExit(f"No finished seed of {', '.join(args.runs)} has a finished {baseline} of the same seed; "
                         "nothing written.")
    summary = {"protocol": protocol["name"], "baseline": baseline, "split": args.split, "rows": rows,
               "not_finished": skipped, "command": "python -m bench.step_groups " + " ".join(sys.argv[1:] if argv is None else argv),
               "machine": machine(), "seconds": round(time.time() - start, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{protocol['name']}_step_groups"
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    stem.with_suffix(".md").write_text(to_markdown(summary), encoding="utf-8")
    print(f"written: {stem}.json, {stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
