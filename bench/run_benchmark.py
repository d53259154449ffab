"""Run a benchmark protocol and write its results to docs/results/<protocol>.json and .md.

    python -m bench.run_benchmark bench/protocols/beauty_cpu.yaml [--source-root DIR] [--jobs 1] [--only NAME ...]

(from the repository root). A protocol file names a dataset and its source file (``source: {format: text,
input: Beauty/Beauty.txt}``), the settings shared by every run, and the runs (model + overrides) with their
seeds. The source's ``input`` is relative to a data folder given at run time, ``--source-root DIR`` or the
environment variable RECBOLE_DR_SOURCE_ROOT; it is only read once, to convert the dataset into
bench/work/dataset/ the first time. Each run is a subprocess ``python -m bench.worker`` (in the repository root)
with a fixed checkpoint path and ``resume=True``: restarting the command skips finished runs and continues
unfinished ones from their last epoch. Runs go one after another unless ``--jobs`` > 1 (then each gets
``OMP_NUM_THREADS = threads // jobs``, and timing ratios are not comparable: use ``--jobs 1`` for timings).
Model selection uses the validation split only; the test split is evaluated once, on the best-valid model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

ROOT = Path(__file__).resolve().parent.parent
METRICS = ["recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20"]
SOURCE_ROOT_ENV = "RECBOLE_DR_SOURCE_ROOT"
# Row fields computed against the baseline; recomputed whenever a summary is rewritten.
RATIO_KEYS = ("train_time_ratio", "stage_time_ratio", "eval_time_ratio", "test_change_vs_baseline")
# Where the public copy of each known source file comes from (by file name), for the missing-source message.
PUBLIC_SOURCES = {
    "Beauty.txt": "the S3-Rec code release, RUCAIBox/CIKM2020-S3Rec on GitHub, file data/Beauty.txt",
    "Instruments.inter.json": "LC-Rec-style releases of Amazon 2018 Musical Instruments "
                              "(a JSON object {user: [item, ...]}, format lcrec)",
}


def load_protocol(path: Path) -> Dict[str, Any]:
    with open(path, "r", encoding="utf-8") as f:
        protocol = yaml.safe_load(f)
    for key in ("name", "dataset", "runs"):
        if key not in protocol:
            raise SystemExit(f"{path}: protocol needs a '{key}' entry.")
    return protocol


def source_root(given: Optional[Path] = None) -> Optional[Path]:
    """The folder the protocols' source inputs are relative to: ``--source-root``, else $RECBOLE_DR_SOURCE_ROOT."""
    root = given or os.environ.get(SOURCE_ROOT_ENV) or None
    return Path(root).expanduser().resolve() if root else None


def missing_source_message(name: str, inter: Path, source: Dict[str, Any], root: Optional[Path]) -> str:
    """Which file is needed, where its public copy comes from, and how to tell the runner where it is."""
    needed = source["input"]
    where = (f"it is not at {root / needed} (the source folder given)" if root else
             "no source folder was given")
    origin = PUBLIC_SOURCES.get(Path(needed).name, "the dataset's public release")
    return (f"Dataset {name} is not converted yet ({inter} is missing) and {where}. It is converted once from "
            f"{needed} (format {source.get('format', 'auto')}), relative to a source folder: pass "
            f"--source-root DIR or set {SOURCE_ROOT_ENV}=DIR, with the file at DIR/{needed}. "
            f"The public copy of {Path(needed).name} comes from {origin}.")


def ensure_dataset(protocol: Dict[str, Any], data_root: Path, root: Optional[Path] = None) -> None:
    """Convert the protocol's dataset into ``data_root`` unless it is there already, and write its Semantic IDs
    when the protocol names a ``sids`` source. ``root`` is the source folder the protocol's inputs are relative
    to (default: $RECBOLE_DR_SOURCE_ROOT)."""
    name = protocol["dataset"]
    inter = data_root / name / f"{name}.inter"
    if name != "ml-100k" and not inter.is_file():
        convert_source(protocol, data_root, root)
    if protocol.get("sids") and not (data_root / name / f"{name}.item").is_file():
        tokenize_source(protocol, data_root, root)


def tokenize_source(protocol: Dict[str, Any], data_root: Path, root: Optional[Path]) -> None:
    """``sids: {input: <item_id, sid TSV>}`` (published SIDs) or ``sids: {text: <item text TSV>, ...}`` (RQ-VAE
    over MiniLM embeddings; other entries are ``tokenize``'s keyword arguments)."""
    from recbole_diffureason.sid.tokenize import tokenize

    options = dict(protocol["sids"])
    root = source_root(root)
    for key in ("input", "text"):
        if key in options:
            path = (root or Path(".")) / options.pop(key)
            if not path.is_file():
                raise SystemExit(f"The SID source {path} of protocol {protocol['name']} is missing: pass --source-root "
                                 f"DIR or set {SOURCE_ROOT_ENV}=DIR.")
            options["sids" if key == "input" else "text"] = path
    meta = tokenize(protocol["dataset"], data_root, **options)
    print(f"tokenized {protocol['dataset']}: {meta['source']}; " + "; ".join(meta["report"]["lines"]), flush=True)


def convert_source(protocol: Dict[str, Any], data_root: Path, root: Optional[Path] = None) -> None:
    name = protocol["dataset"]
    inter = data_root / name / f"{name}.inter"
    source = protocol.get("source")
    if not source:
        raise SystemExit(f"Dataset {name} is missing under {data_root} and the protocol names no source.")
    root = source_root(root)
    if root is None or not (root / source["input"]).is_file():
        raise SystemExit(missing_source_message(name, inter, source, root))
    from recbole_diffureason.data.convert import convert

    stats = convert(root / source["input"], name, data_root, source.get("format", "auto"))
    print(f"converted {source['input']}: {stats.summary()}", flush=True)


def repo_relative(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it, else as given."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def seeded_overrides(overrides: Dict[str, Any], seed: int) -> Dict[str, Any]:
    """``{seed}`` in a string value becomes the run's seed, so a run can name the output of the same seed of
    another run (e.g. ``backbone_checkpoint: bench/work/p/SASRec-seed{seed}.pth``)."""
    return {key: value.replace("{seed}", str(seed)) if isinstance(value, str) else value
            for key, value in overrides.items()}


def run_one(protocol: Dict[str, Any], run: Dict[str, Any], seed: int, work: Path, data_root: Path, threads: int) -> Dict:
    tag = f"{run['name']}-seed{seed}"
    result_file = work / f"{tag}.json"
    if result_file.is_file():
        with open(result_file, "r", encoding="utf-8") as f:
            done = json.load(f)
        if done.get("finished"):
            print(f"[{tag}] already finished, skipping", flush=True)
            return done
    config = {
        **protocol.get("common", {}),
        **seeded_overrides(run.get("overrides", {}), seed),
        "seed": seed,
        # Relative to the repository root, where the worker runs: the summaries record no machine's paths.
        "data_path": repo_relative(data_root),
        "checkpoint_dir": repo_relative(work),
        "saved_model_file": repo_relative(work / f"{tag}.pth"),
        "results_file": repo_relative(work / f"{tag}.run.json"),
        "resume": True,
        "show_progress": False,
    }
    spec = {
        "model": run["model"],
        "dataset": protocol["dataset"],
        "config_dict": config,
        "evaluate_test": protocol.get("evaluate_test", True),
        "result_file": str(result_file),
        "tag": tag,
        "runner_command": runner_command(),
        "machine": machine(),
    }
    # The worker runs as ``python -m bench.worker`` in the repository root; ROOT also goes first on PYTHONPATH
    # so that ``bench`` is found even where the interpreter does not search the working directory (PYTHONSAFEPATH).
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONPATH=pythonpath)
    log = work / f"{tag}.log"
    print(f"[{tag}] started (log: {log})", flush=True)
    start = time.time()
    with open(log, "a", encoding="utf-8") as f:
        code = subprocess.call(
            [sys.executable, "-m", "bench.worker", json.dumps(spec)], stdout=f, stderr=subprocess.STDOUT,
            env=env, cwd=str(ROOT),
        )
    if code != 0:
        print(f"[{tag}] FAILED with exit code {code}; see {log}", flush=True)
        return {"tag": tag, "finished": False, "error": f"exit code {code}"}
    with open(result_file, "r", encoding="utf-8") as f:
        done = json.load(f)
    print(f"[{tag}] finished in {time.time() - start:.0f}s", flush=True)
    return done


def runner_command(argv: Optional[Sequence[str]] = None) -> str:
    """The command that made the runs, as recorded in the results: this script is spelled ``-m
    bench.run_benchmark`` however it was started, and ``--source-root`` is left out (it names a folder of the
    machine that converted the dataset, and is not needed once the dataset is converted)."""
    argv = list(sys.argv if argv is None else argv)
    if argv and Path(argv[0]).resolve() == Path(__file__).resolve():
        argv = ["-m", "bench.run_benchmark"] + argv[1:]
    kept: List[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--source-root":
            skip = True
        elif not arg.startswith("--source-root="):
            kept.append(arg)
    return " ".join([Path(sys.executable).name] + kept)


def machine() -> Dict[str, Any]:
    return {"platform": platform.platform(), "processor": platform.processor(), "python": platform.python_version(),
            "cpu_count": os.cpu_count()}


def machine_of(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The machine the finished runs report when they agree (a summary rewritten elsewhere keeps theirs)."""
    seen = {json.dumps(r["machine"], sort_keys=True) for r in rows if r.get("machine")}
    return json.loads(seen.pop()) if len(seen) == 1 else machine()


def stage_seconds(history: List[Dict[str, Any]]) -> Dict[str, float]:
    """Median training seconds per epoch of each stage of a staged model (LARES SPT -> RPT), whose stages cost
    very different amounts; empty for a model trained in one stage."""
    stages: Dict[str, List[float]] = {}
    for h in history:
        stages.setdefault(h.get("stage", "train"), []).append(h["train_seconds"])
    return {name: median(values) for name, values in stages.items()} if len(stages) > 1 else {}


def median(values: List[float]) -> float:
    """Per-epoch seconds are summarised by their median: one epoch slowed by other work on the machine
    (a test run, a resumed process warming up) should not move a timing ratio."""
    return float(statistics.median(values)) if values else 0.0


def summarise(protocol: Dict[str, Any], results: List[Dict[str, Any]],
              kept_rows: Sequence[Dict[str, Any]] = ()) -> Dict[str, Any]:
    """The summary of ``results`` (run results as the worker writes them) plus ``kept_rows`` (finished rows of an
    earlier summary, already in row form), with every ratio to the baseline computed afresh."""
    rows = [{k: v for k, v in row.items() if k not in RATIO_KEYS} for row in kept_rows]
    for res in results:
        if not res.get("finished"):
            rows.append({"tag": res.get("tag"), "finished": False, "error": res.get("error")})
            continue
        history = [h for h in res["history"] if "train_seconds" in h]
        rows.append({
            "tag": res["tag"],
            "name": res["name"],
            "model": res["model"],
            "seed": res["seed"],
            "finished": True,
            "epochs_trained": len(history),
            "best_epoch": res.get("best_epoch"),
            "train_seconds_per_epoch": median([h["train_seconds"] for h in history]),
            "stage_seconds_per_epoch": stage_seconds(history),
            "valid_eval_seconds": median([h.get("valid_seconds", 0.0) for h in history]),
            "test_eval_seconds": res.get("test_eval_seconds"),
            "valid": res["best_valid_result"],
            "test": res["test_result"],
            "wall_seconds": res.get("wall_seconds"),
            "overrides": res.get("overrides"),
            "command": res.get("runner_command"),
            "machine": res.get("machine"),
            "device": res.get("device"),
        })
    order = {tag: i for i, tag in enumerate(run_tags(protocol))}
    rows.sort(key=lambda r: order.get(r.get("tag"), len(order)))
    base = {r["seed"]: r for r in rows if r.get("finished") and r["model"] == protocol.get("baseline", "SASRec")}
    for r in rows:
        b = base.get(r.get("seed"))
        if r.get("finished") and b:
            r["train_time_ratio"] = r["train_seconds_per_epoch"] / b["train_seconds_per_epoch"]
            r["stage_time_ratio"] = {name: seconds / b["train_seconds_per_epoch"]
                                     for name, seconds in r["stage_seconds_per_epoch"].items()}
            r["eval_time_ratio"] = r["valid_eval_seconds"] / b["valid_eval_seconds"] if b["valid_eval_seconds"] else None
            if r.get("test") and b.get("test"):
                r["test_change_vs_baseline"] = {m: r["test"][m] / b["test"][m] - 1.0
                                                for m in ("ndcg@10", "recall@10") if b["test"].get(m)}
    return {
        "protocol": protocol["name"],
        "dataset": protocol["dataset"],
        "seed_means": seed_means(rows, protocol.get("baseline", "SASRec")),
        "description": protocol.get("description", ""),
        "baseline": protocol.get("baseline", "SASRec"),
        "common": protocol.get("common", {}),
        "machine": machine_of(rows),
        "command": runner_command(),
        "rows": rows,
        "paper": protocol.get("paper", {}),
        "reference": protocol.get("reference", {}),
    }


def kept_from_previous_summary(protocol: Dict[str, Any], previous: Optional[Dict[str, Any]],
                               present: Sequence[str]) -> List[Dict[str, Any]]:
    """Finished rows of the previous summary whose run has no finished result in the work folder.

    Work folders do not outlive the machine they ran on (a later session, another GPU stay), but the summary under
    docs/results does: without this, a runner started for one more seed would rewrite the summary with that seed
    alone. A row is kept only while the protocol still names its run and seed."""
    if not previous:
        return []
    wanted, present = set(run_tags(protocol)), set(present)
    return [row for row in previous.get("rows", [])
            if row.get("finished") and row.get("tag") in wanted and row["tag"] not in present]


def mean_and_std(values: List[float]) -> Dict[str, Optional[float]]:
    """Mean and sample standard deviation (None for a single value: one seed says nothing about the spread)."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None}


def seed_means(rows: List[Dict[str, Any]], baseline: str) -> List[Dict[str, Any]]:
    """Per run name, over its finished seeds: mean and std of every test metric, of the epochs and of the seconds;
    and the change of its mean test NDCG@10 / Recall@10 against the baseline's mean over the same seeds (over all
    the baseline's seeds, said in ``baseline_seeds``, when it lacks one of them). A gain is claimed on these means."""
    by_name: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        if r.get("finished") and r.get("test"):
            by_name.setdefault(r["name"], []).append(r)
    base_runs = {r["seed"]: r for r in rows if r.get("finished") and r.get("test") and r["model"] == baseline}
    out = []
    for name, runs in by_name.items():
        seeds = sorted(r["seed"] for r in runs)
        entry = {
            "name": name, "model": runs[0]["model"], "seeds": seeds,
            "test": {m: mean_and_std([r["test"][m] for r in runs]) for m in METRICS if all(m in r["test"] for r in runs)},
            "epochs": mean_and_std([float(r["epochs_trained"]) for r in runs]),
            "train_seconds_per_epoch": mean_and_std([r["train_seconds_per_epoch"] for r in runs]),
            "valid_eval_seconds": mean_and_std([r["valid_eval_seconds"] for r in runs]),
        }
        base_seeds = seeds if all(s in base_runs for s in seeds) else sorted(base_runs)
        if base_seeds and runs[0]["model"] != baseline:
            base = [base_runs[s] for s in base_seeds]
            entry["baseline_seeds"] = base_seeds
            entry["test_change_vs_baseline"] = {
                m: entry["test"][m]["mean"] / statistics.fmean(b["test"][m] for b in base) - 1.0
                for m in ("ndcg@10", "recall@10") if m in entry["test"]}
            entry["train_time_ratio"] = (entry["train_seconds_per_epoch"]["mean"]
                                         / statistics.fmean(b["train_seconds_per_epoch"] for b in base))
            base_eval = statistics.fmean(b["valid_eval_seconds"] for b in base)
            entry["eval_time_ratio"] = entry["valid_eval_seconds"]["mean"] / base_eval if base_eval else None
        out.append(entry)
    return out


def seed_means_table(summary: Dict[str, Any]) -> List[str]:
    """The markdown of the mean-over-seeds table (test split), for protocols with several seeds of one run."""
    entries = summary.get("seed_means") or []
    if not any(len(e["seeds"]) > 1 for e in entries):
        return []
    lines = ["", "## Test metrics, mean ± std over seeds", "",
             "| run | seeds | " + " | ".join(map(short_name, METRICS))
             + " | epochs | s/epoch | train x | eval x | N@10 vs base | R@10 vs base | base seeds |",
             "|" + "---|" * (len(METRICS) + 9)]
    for e in entries:
        cells = []
        for m in METRICS:
            v = e["test"].get(m)
            cells.append("-" if v is None else fmt(v["mean"]) + ("" if v["std"] is None else f" ± {v['std']:.4f}"))
        change = e.get("test_change_vs_baseline") or {}
        lines.append(f"| {e['name']} | {', '.join(map(str, e['seeds']))} | " + " | ".join(cells) + " | "
                     + " | ".join([fmt(e["epochs"]["mean"], 1), fmt(e["train_seconds_per_epoch"]["mean"], 1),
                                   fmt(e.get("train_time_ratio"), 2), fmt(e.get("eval_time_ratio"), 2),
                                   percent(change.get("ndcg@10")), percent(change.get("recall@10")),
                                   ", ".join(map(str, e.get("baseline_seeds", []))) or "-"]) + " |")
    return lines


def fmt(v, digits=4):
    return "-" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def percent(v) -> str:
    return "-" if v is None else f"{v:+.1%}"


def short_name(metric: str) -> str:
    return metric.replace("recall", "R").replace("ndcg", "N")


def reference_tables(summary: Dict[str, Any]) -> List[str]:
    """The markdown of the protocol's reference block and papers block (metrics measured elsewhere)."""
    lines: List[str] = []
    for title, block in (("Reference (measured elsewhere, same protocol)", summary.get("reference")),
                         ("Papers (their protocol and sizes; not comparable run for run)", summary.get("paper"))):
        if block:
            lines += ["", f"## {title}", "", "| source | " + " | ".join(map(short_name, METRICS)) + " |",
                      "|" + "---|" * (len(METRICS) + 1)]
            lines += [f"| {source} | " + " | ".join(fmt(values.get(m)) for m in METRICS) + " |"
                      for source, values in block.items()]
    return lines


def to_markdown(summary: Dict[str, Any]) -> str:
    lines = [f"# {summary['protocol']}: {summary['dataset']}", "", summary.get("description", "").strip(), ""]
    lines += [f"Command: `{summary['command']}`", f"Machine: {summary['machine']['platform']}, "
              f"{summary['machine']['cpu_count']} CPUs, Python {summary['machine']['python']}", ""]
    header = "| run | seed | split | " + " | ".join(map(short_name, METRICS))
    lines += [header + " | epochs | s/epoch (train, median) | s/eval (valid, median) | train x | eval x | test N@10 vs base | test R@10 vs base |",
              "|" + "---|" * (len(METRICS) + 10)]
    for r in summary["rows"]:
        if not r.get("finished"):
            lines.append(f"| {r['tag']} | | not finished: {r.get('error')} |" + " |" * (len(METRICS) + 7))
            continue
        for split in ("test", "valid"):
            values = r.get(split) or {}
            change = r.get("test_change_vs_baseline") or {}
            timing = [str(r["epochs_trained"]), fmt(r["train_seconds_per_epoch"], 1), fmt(r["valid_eval_seconds"], 2),
                      fmt(r.get("train_time_ratio"), 2), fmt(r.get("eval_time_ratio"), 2),
                      percent(change.get("ndcg@10")), percent(change.get("recall@10"))] if split == "test" else [""] * 7
            lines.append(f"| {r['name']} | {r['seed']} | {split} | " + " | ".join(fmt(values.get(m)) for m in METRICS)
                         + " | " + " | ".join(timing) + " |")
    lines += seed_means_table(summary)
    staged = [r for r in summary["rows"] if r.get("stage_seconds_per_epoch")]
    if staged:
        lines += ["", "Training seconds per epoch of each stage (median; x = ratio to the baseline's epoch):", ""]
        for r in staged:
            ratios = r.get("stage_time_ratio") or {}
            parts = [f"{name} {seconds:.1f} s" + (f" ({ratios[name]:.2f}x)" if name in ratios else "")
                     for name, seconds in r["stage_seconds_per_epoch"].items()]
            lines.append(f"- {r['name']} (seed {r['seed']}): " + ", ".join(parts))
    commands = sorted({r["command"] for r in summary["rows"] if r.get("command")})
    if len(commands) > 1 or (commands and commands[0] != summary["command"]):
        lines += ["", "Runs were made by these commands (each run's own command and machine are in the JSON):", ""]
        lines += [f"- `{c}`" for c in commands]
    lines += reference_tables(summary)
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("protocol", type=Path)
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (timings are only comparable with 1)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads shared by the jobs")
    parser.add_argument("--only", nargs="*", default=None, help="run only these run names")
    parser.add_argument("--seeds", nargs="*", type=int, default=None,
                        help="run only these seeds of the selected runs (e.g. the one seed a session has time for)")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default bench/work/<protocol>)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results", help="where the summary goes")
    parser.add_argument("--summary-only", action="store_true", help="rewrite the summary from finished runs; train nothing")
    parser.add_argument("--source-root", type=Path, default=None,
                        help=f"folder the protocol's source input is relative to, read only to convert the dataset "
                             f"the first time (default: ${SOURCE_ROOT_ENV})")
    args = parser.parse_args()

    protocol = load_protocol(args.protocol)
    work = (args.work or ROOT / "bench" / "work" / protocol["name"]).resolve()
    if args.summary_only:
        if not any((work / f"{tag}{ext}").is_file() for tag in run_tags(protocol) for ext in (".json", ".log")):
            raise SystemExit(f"No run of {protocol['name']} in {work}: --summary-only rewrites the summary from the "
                             f"runs in the work folder and would leave an empty one; nothing written.")
        print(to_markdown(write_summary(protocol, work, args.out, {}, keep_command=True)))
        return 0
    work.mkdir(parents=True, exist_ok=True)
    data_root = work.parent / "dataset"
    ensure_dataset(protocol, data_root, args.source_root)
    jobs = [(run, seed) for run in protocol["runs"] if not args.only or run["name"] in args.only
            for seed in run_seeds(protocol, run) if not args.seeds or seed in args.seeds]
    threads = max(1, args.threads // max(args.jobs, 1))
    failed: Dict[str, Dict[str, Any]] = {}

    def finish(job):
        result = run_one(protocol, job[0], job[1], work, data_root, threads)
        if not result.get("finished"):
            failed[result["tag"]] = result
        write_summary(protocol, work, args.out, failed)

    with ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        list(pool.map(finish, jobs))
    summary = write_summary(protocol, work, args.out, failed)
    print(to_markdown(summary))
    return 0 if not failed else 1


def run_seeds(protocol: Dict[str, Any], run: Dict[str, Any]) -> List[int]:
    """The seeds of one run: its own ``seeds``, else the protocol's, else 2020."""
    return run.get("seeds", protocol.get("seeds", [2020]))


def run_tags(protocol: Dict[str, Any]) -> List[str]:
    """``<run name>-seed<seed>`` of every run of the protocol, in protocol order: the file stem of its outputs."""
    return [f"{run['name']}-seed{seed}" for run in protocol["runs"]
            for seed in run_seeds(protocol, run)]


def finished_results(protocol: Dict[str, Any], work: Path) -> List[Dict[str, Any]]:
    """Every finished run of the protocol found in its work folder, in protocol order, whoever ran it."""
    results = []
    for tag in run_tags(protocol):
        path = work / f"{tag}.json"
        if path.is_file():
            with open(path, "r", encoding="utf-8") as f:
                results.append(json.load(f))
    return results


STAGE_LINE = re.compile(r"Training stage '([^']+)'")
VALID_SCORE = re.compile(r"epoch (\d+) evaluating \[time: [0-9.]+s, valid_score: ([0-9.]+)\]")


def log_stages(text: str) -> List[Tuple[Optional[str], str]]:
    """A log cut into its training stages, in order (``None`` when the model has one stage). A resumed run
    announces its stage again, so the pieces of one stage are joined."""
    pieces = STAGE_LINE.split(text)
    if len(pieces) == 1:
        return [(None, text)]
    stages: Dict[str, str] = {}
    for name, body in zip(pieces[1::2], pieces[2::2]):
        stages[name] = stages.get(name, "") + body
    return list(stages.items())


def stage_progress(text: str) -> Optional[Tuple[int, int, float, float]]:
    """Epochs done, best epoch, best valid score and median training seconds of one stage's log lines; an epoch
    logged twice (a run resumed within it) counts once, with its last score."""
    scores = {int(m.group(1)): float(m.group(2)) for m in VALID_SCORE.finditer(text)}
    seconds = [float(m.group(1)) for m in re.finditer(r"epoch \d+ training \[time: ([0-9.]+)s", text)]
    if not scores:
        return None
    best_epoch = max(scores, key=lambda epoch: (scores[epoch], epoch))  # a tie is an improvement to RecBole
    return max(scores) + 1, best_epoch, scores[best_epoch], median(seconds)


def unfinished_progress(protocol: Dict[str, Any], work: Path) -> List[Dict[str, Any]]:
    """Runs with a log but no finished result: how far they got, from the trainer's log lines (per stage for
    models trained in stages, the current stage first)."""
    rows = []
    for tag in run_tags(protocol):
        log = work / f"{tag}.log"
        if (work / f"{tag}.json").is_file() or not log.is_file():
            continue
        text = log.read_text(encoding="utf-8")
        # The exception's line may carry its module (recbole_diffureason.trainer.NonFiniteTrainingError: ...).
        crash = re.search(r"Traceback \(most recent call last\):.*?\n((?:\w+\.)*\w*(?:Error|Exception)\w*: [^\n]*)",
                          text, re.S)
        state = f"failed ({crash.group(1)[:200]})" if crash else "in progress"
        stages = [(name, stage_progress(body)) for name, body in log_stages(text)]
        stages = [(name, progress) for name, progress in stages if progress]
        if stages:
            parts = []
            for name, (done, best_epoch, best, seconds) in reversed(stages):
                where = f"stage '{name}': " if name else ""
                parts.append(f"{where}{done} epochs done, best valid N@10 so far {best:.4f} (epoch {best_epoch}), "
                             f"median {seconds:.0f} s per training epoch")
            rows.append({"tag": tag, "finished": False, "error": f"{state}: " + "; before it, ".join(parts)})
        elif crash:
            rows.append({"tag": tag, "finished": False, "error": state})
    return rows


def write_summary(protocol: Dict[str, Any], work: Path, out: Path, failed: Dict[str, Any],
                  keep_command: bool = False) -> Dict[str, Any]:
    """Write the summary of everything finished so far (after every run, so a long benchmark shows progress;
    runners started separately for different runs of one protocol share the same summary)."""
    previous_path = out / f"{protocol['name']}.json"
    previous = None
    if previous_path.is_file():
        with open(previous_path, "r", encoding="utf-8") as f:
            previous = json.load(f)
    finished = finished_results(protocol, work)
    kept = kept_from_previous_summary(protocol, previous, [r["tag"] for r in finished])
    done = {r["tag"] for r in kept}
    progress = [r for r in unfinished_progress(protocol, work) if r["tag"] not in done]  # a log says more than an exit code
    logged = {r["tag"] for r in progress}
    summary = summarise(protocol, finished + [r for tag, r in failed.items() if tag not in logged | done] + progress,
                        kept_rows=kept)
    if keep_command and previous:
        summary["command"] = previous.get("command", summary["command"])
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{protocol['name']}.json", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    with open(out / f"{protocol['name']}.md", "w", encoding="utf-8") as f:
        f.write(to_markdown(summary))
    return summary


if __name__ == "__main__":
    sys.exit(main())
