"""``analyze``: training curves and the DiffuReason paper's analyses of a checkpoint, as JSON and PNG.

* Training curves: every loss term (mean per batch) and the validation metric per epoch, from the results
  file's ``history``.
* Thinking steps (paper Fig. 4): NDCG@k and Recall@k on the test split (``split="valid"``: the validation split,
  where a choice between options may be made) when items are scored by each thought
  ``tau_1 .. tau_R`` (``score_all(tau_r)``) and by the refined latent ``mu`` (what the model ranks with).
  Models without thoughts get a note instead.
* Groups (paper Fig. 5): test NDCG@k and Recall@k by user history length (interactions before the test
  target) and by target-item popularity (how often the item is a training target), in quantile groups; with
  ``baseline_file`` (e.g. a SASRec checkpoint on the same data) the relative gain per group.
* Paired test (with ``baseline_file``): the overall gain with a paired-bootstrap 95% interval and paired t and
  Wilcoxon p-values over the test rows, so a gain of a few percent on one seed says how far it is from noise.

Metrics are computed per test row exactly as RecBole's full-sort evaluator does (padding item and, where
RecBole masks them, history items excluded; ``torch.topk``), so the ``mu`` row and the model's overall group
equal the run's test result. Plots need matplotlib (``pip install "recbole-diffureason[plot]"``); without it
the JSON is written and the message says how to get the pictures.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

SPLITS = ("test", "valid")
PLOT_HINT = 'pip install "recbole-diffureason[plot]" (or pip install matplotlib) to get the PNG figures'


class AnalysisError(ValueError):
    """The inputs of ``analyze`` cannot be used together (missing file, other dataset, ...)."""


# ---------------------------------------------------------------------------------------------- metrics
def row_metrics(scores: torch.Tensor, positive_u: torch.Tensor, positive_i: torch.Tensor, k: int
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-row ``(ndcg@k, recall@k)`` as RecBole's ``NDCG`` and ``Recall`` compute them from ``topk``."""
    pos = torch.zeros_like(scores, dtype=torch.bool)
    pos[positive_u, positive_i] = True
    top = torch.topk(scores, min(k, scores.size(1)), dim=-1).indices
    hits = pos.gather(1, top).float()
    pos_len = pos.sum(dim=1).float()
    discount = 1.0 / torch.log2(torch.arange(2, hits.size(1) + 2, dtype=torch.float))
    dcg = (hits * discount).sum(dim=1)
    ideal = torch.cumsum(discount, 0)[(pos_len.clamp(min=1, max=hits.size(1)) - 1).long()]
    return dcg / ideal, hits.sum(dim=1) / pos_len.clamp(min=1)


@torch.no_grad()
def evaluate_rows(model, eval_data, scorers: Dict[str, Callable], k: int) -> Dict[str, Any]:
    """Per-row metrics of each scorer (``interaction -> [B, n_items]`` scores) over a full-sort loader (test or
    validation).

    Returns ``{"user": [B], "target": [B], "<name>": {"ndcg": [B], "recall": [B]}}`` (numpy arrays).
    """
    model.eval()
    device = next(model.parameters()).device
    uid_field = eval_data.dataset.uid_field
    users, targets = [], []
    out: Dict[str, Dict[str, List[torch.Tensor]]] = {name: {"ndcg": [], "recall": []} for name in scorers}
    for batch in eval_data:
        interaction, history_index, positive_u, positive_i = batch
        interaction = interaction.to(device)
        rows = len(interaction)
        users.append(interaction[uid_field].cpu())
        target = torch.full((rows,), -1, dtype=torch.long)
        target[positive_u] = positive_i.cpu()  # a positive of each row: the target under leave-one-out
        targets.append(target)
        for name, scorer in scorers.items():
            scores = scorer(interaction).view(rows, -1).float().cpu()
            scores[:, 0] = -math.inf  # RecBole never ranks the padding item
            if history_index is not None:
                scores[history_index] = -math.inf
            ndcg, recall = row_metrics(scores, positive_u, positive_i, k)
            out[name]["ndcg"].append(ndcg)
            out[name]["recall"].append(recall)
    result: Dict[str, Any] = {"user": torch.cat(users).numpy(), "target": torch.cat(targets).numpy()}
    for name, metrics in out.items():
        result[name] = {m: torch.cat(v).numpy() for m, v in metrics.items()}
    return result


def has_thoughts(model) -> bool:
    """A DiffuReason model: ``forward`` returns ``(policy, thoughts, cond)`` and ``score_all`` scores a latent."""
    from recbole_diffureason.model.diffureason import DiffuReason

    return isinstance(model, DiffuReason)


def thought_scorers(model, steps: int) -> Dict[str, Callable]:
    """``tau_1 .. tau_R`` scored as ``score_all(tau_r)``, and ``mu`` (also when the model scores another latent,
    e.g. ``eval_latent: steps_mean``)."""
    # One forward pass per batch serves all R thoughts. The cache holds the batch itself and compares identity:
    # an id() key is reused by the next batch once the previous one is freed, which scored stale thoughts.
    cache: Dict[str, Any] = {"batch": None, "thoughts": None}

    def thought(r: int) -> Callable:
        def score(interaction):
            if cache["batch"] is not interaction:
                cache["batch"], cache["thoughts"] = interaction, model.forward(interaction).thoughts
            return model.score_all(cache["thoughts"][:, r])
        return score

    scorers = {f"tau_{r + 1}": thought(r) for r in range(steps)}
    scorers["mu"] = lambda interaction: model.score_all(model.anchor(interaction, latent="mu"))
    return scorers


# ---------------------------------------------------------------------------------------------- groups
def history_lengths(dataset) -> np.ndarray:
    """Per internal user id: rows of the user in RecBole's sequential dataset, one per predicted item, i.e. the
    interactions before the user's last (test) item under leave-one-out."""
    return np.bincount(dataset.inter_feat[dataset.uid_field].numpy(), minlength=dataset.user_num)


def item_popularity(train_data) -> np.ndarray:
    """Per internal item id: how often the item is a training target."""
    ds = train_data.dataset
    return np.bincount(ds.inter_feat[ds.iid_field].numpy(), minlength=ds.item_num)


def quantile_groups(values: np.ndarray, n_groups: int) -> Tuple[np.ndarray, List[str]]:
    """Group index per value and a label per group (``lo-hi``), from quantile edges (ties stay in one group)."""
    edges = np.unique(np.quantile(values, np.linspace(0, 1, n_groups + 1)))
    if len(edges) == 1:
        return np.zeros(len(values), dtype=int), [f"{int(edges[0])}"]
    index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    labels = []
    for g in range(len(edges) - 1):
        members = values[index == g]
        lo, hi = (int(members.min()), int(members.max())) if len(members) else (0, -1)
        labels.append("" if hi < lo else str(lo) if lo == hi else f"{lo}-{hi}")
    keep = [g for g in range(len(labels)) if labels[g]]
    remap = {g: i for i, g in enumerate(keep)}
    return np.array([remap[g] for g in index]), [labels[g] for g in keep]


def relative_gain_pct(value: float, base: float, undefined: Optional[float] = None) -> Optional[float]:
    """``value`` over ``base`` in percent; ``undefined`` when the baseline scores nothing."""
    return (value - base) / base * 100 if base > 0 else undefined


def group_table(groups: np.ndarray, labels: Sequence[str], metrics: Dict[str, np.ndarray],
                baseline: Optional[Dict[str, np.ndarray]] = None) -> List[Dict[str, Any]]:
    rows = []
    for g, label in enumerate(labels):
        member = groups == g
        row: Dict[str, Any] = {"group": label, "rows": int(member.sum())}
        for name, values in metrics.items():
            row[name] = float(values[member].mean())
            if baseline is not None:
                base = float(baseline[name][member].mean())
                row[f"baseline_{name}"] = base
                row[f"gain_{name}_pct"] = relative_gain_pct(row[name], base)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- paired test
def paired_comparison(ours: np.ndarray, base: np.ndarray, n_boot: int = 2000, seed: int = 0) -> Dict[str, Any]:
    """How sure a gain over a baseline is, from the two models' metrics on the same rows.

    The rows are the unit of resampling: a paired bootstrap of the relative gain of the means (its 2.5 and 97.5
    percentiles), a paired t-test and a Wilcoxon signed-rank test on the per-row differences. A gain of a few
    percent on one seed is only worth reporting with this; the spread over seeds is the other half (benchmarks).
    """
    from scipy import stats

    ours, base = np.asarray(ours, dtype=float), np.asarray(base, dtype=float)
    if ours.shape != base.shape or ours.ndim != 1 or len(ours) < 2:
        raise AnalysisError(f"A paired comparison needs two equally long 1-d arrays of at least 2 rows, got "
                            f"{ours.shape} and {base.shape}.")
    diff = ours - base
    base_mean = float(base.mean())
    rng = np.random.default_rng(seed)
    boot = np.empty(n_boot)
    for b in range(n_boot):  # one draw at a time: a [n_boot, rows] index matrix is hundreds of MB on real data
        draw = rng.integers(0, len(ours), size=len(ours))
        boot[b] = relative_gain_pct(ours[draw].mean(), base[draw].mean(), undefined=float("nan"))
    if not np.any(diff != 0):
        t_p = w_p = 1.0  # both tests are undefined when no row differs: the models are indistinguishable
    else:
        t_p = 0.0 if np.std(diff) == 0 else float(stats.ttest_rel(ours, base).pvalue)  # a constant shift
        w_p = float(stats.wilcoxon(diff[diff != 0]).pvalue)
    return {
        "rows": int(len(ours)), "model": float(ours.mean()), "baseline": base_mean,
        "gain_pct": relative_gain_pct(float(ours.mean()), base_mean),
        "gain_pct_ci95": [float(np.nanpercentile(boot, 2.5)), float(np.nanpercentile(boot, 97.5))],
        "rows_better": int((diff > 0).sum()), "rows_worse": int((diff < 0).sum()), "rows_equal": int((diff == 0).sum()),
        "p_paired_t": t_p, "p_wilcoxon": w_p, "bootstrap_draws": n_boot, "bootstrap_seed": seed,
    }


# ---------------------------------------------------------------------------------------------- inputs
def find_results_file(model_file: str, checkpoint_dir: Optional[str] = None) -> Optional[str]:
    """The results JSON whose ``saved_model_file`` is ``model_file``, in the checkpoint's folder."""
    target = Path(model_file).resolve()
    folders = {target.parent} | ({Path(checkpoint_dir).resolve()} if checkpoint_dir else set())
    by_name = None
    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            saved = data.get("saved_model_file") if isinstance(data, dict) else None
            if not saved:
                continue
            if Path(saved).resolve() == target:
                return str(path)
            if Path(saved).name == target.name:
                by_name = str(path)  # the run's folder moved with its files
    return by_name


def read_history(results_file: str) -> List[Dict[str, Any]]:
    path = Path(results_file)
    if not path.is_file():
        raise AnalysisError(f"Results file '{path}' does not exist (it is the saved/<model>-<dataset>-<time>.json "
                            "a run writes; --results_file names it).")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise AnalysisError(f"Results file '{path}' is not JSON ({err}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("history"), list):
        raise AnalysisError(f"Results file '{path}' has no 'history' list: it was not written by run_recbole_dr.py.")
    return data["history"]


def training_curves(history: List[Dict[str, Any]], valid_metric: str) -> Dict[str, Any]:
    """Per-epoch series (x = epochs in training order, over all stages)."""
    terms: List[str] = []
    for epoch in history:
        terms += [t for t in epoch.get("losses", {}) if t not in terms]
    metric = valid_metric.lower()
    return {
        "epoch": list(range(len(history))),
        "stage": [e.get("stage", "train") for e in history],
        "losses": {t: [e.get("losses", {}).get(t) for e in history] for t in terms},
        "valid_metric": metric,
        "valid": [(e.get("valid_result") or {}).get(metric, e.get("valid_score")) for e in history],
    }


def _load(model_file: str, data_path: Optional[str], split: str):
    """Config, model, dataset, training loader and the full-sort loader of ``split`` of a checkpoint."""
    from recbole_diffureason.quick_start import load_data_and_model

    if not Path(model_file).is_file():
        raise AnalysisError(f"Checkpoint '{model_file}' does not exist (runs write saved/<model>-<time>.pth).")
    overrides = {"data_path": data_path} if data_path else {}
    # No log lines or progress bars while analysing; the run's own log has them.
    config, model, dataset, train_data, valid_data, test_data = load_data_and_model(
        model_file, {**overrides, "state": "ERROR", "show_progress": False})
    return config, model, dataset, train_data, test_data if split == "test" else valid_data


def _raw(dataset, field: str, ids: np.ndarray) -> np.ndarray:
    return np.asarray(dataset.id2token(field, ids))


# ---------------------------------------------------------------------------------------------- main
def analyze(
    model_file: str,
    results_file: Optional[str] = None,
    baseline_file: Optional[str] = None,
    out_dir: Optional[str] = None,
    k: int = 10,
    n_groups: int = 4,
    data_path: Optional[str] = None,
    plot: bool = True,
    split: str = "test",
) -> Dict[str, Any]:
    """Write ``analysis.json`` and, with matplotlib, ``training_curves.png``, ``thinking_steps.png`` and
    ``groups.png`` to ``out_dir`` (default ``analysis/<checkpoint name>/``); return the JSON content plus
    ``files`` (what was written) and ``notes`` (what was skipped and why). ``split`` is the split the per-row
    analyses score: ``test`` (the paper's figures) or ``valid`` (where a choice between options may be made)."""
    if k < 1 or n_groups < 1:
        raise AnalysisError(f"--k and --groups must be at least 1, got k={k}, groups={n_groups}.")
    if split not in SPLITS:
        raise AnalysisError(f"split must be one of {', '.join(SPLITS)}, got {split!r}.")
    out = Path(out_dir or Path("analysis") / Path(model_file).stem)
    notes: List[str] = []
    config, model, dataset, train_data, eval_data = _load(model_file, data_path, split)
    report: Dict[str, Any] = {"model_file": str(model_file), "model": config["model"], "dataset": config["dataset"],
                              "k": k, "split": split}

    # Training curves from the run's results file.
    results_file = results_file or find_results_file(model_file, config["checkpoint_dir"])
    if results_file:
        report["results_file"] = str(results_file)
        report["training_curves"] = training_curves(read_history(results_file), config["valid_metric"])
    else:
        notes.append("no results file found next to the checkpoint: pass --results_file for the training curves")

    # Per-row metrics of the model's own scoring (what its evaluation reports: mu, or e.g. the mean of the steps
    # under eval_latent steps_mean), and of each thought and of mu alone.
    steps = int(config["reasoning_steps"]) if has_thoughts(model) else 0
    scorers: Dict[str, Callable] = {"model": model.full_sort_predict,
                                    **(thought_scorers(model, steps) if steps else {})}
    rows = evaluate_rows(model, eval_data, scorers, k)
    if steps:
        report["thinking_steps"] = [
            {"step": name, f"ndcg@{k}": float(rows[name]["ndcg"].mean()),
             f"recall@{k}": float(rows[name]["recall"].mean())}
            for name in [f"tau_{r + 1}" for r in range(steps)] + ["mu"]
        ]
    else:
        notes.append(f"{config['model']} has no thinking steps: the thinking-step analysis is for DiffuReason models")

    # Groups by history length and target popularity, optionally against a baseline.
    users = rows["user"]
    metrics = {f"ndcg@{k}": rows["model"]["ndcg"], f"recall@{k}": rows["model"]["recall"]}
    baseline_metrics = None
    if baseline_file:
        baseline_metrics, baseline_name = _baseline_rows(baseline_file, data_path, config, dataset, users,
                                                         rows["target"], k, split)
        report["baseline"] = {"model_file": str(baseline_file), "model": baseline_name}
    # history_lengths counts what precedes the test item; the validation item is one earlier.
    lengths = history_lengths(dataset)[users] - (1 if split == "valid" else 0)
    popularity = item_popularity(train_data)[np.clip(rows["target"], 0, None)]
    report["groups"] = {}
    for kind, values, what in (("history_length", lengths, f"interactions before the {split} target"),
                               ("target_popularity", popularity, "training occurrences of the target item")):
        index, labels = quantile_groups(values, n_groups)
        report["groups"][kind] = {"description": what, "rows": group_table(index, labels, metrics, baseline_metrics)}
    report["overall"] = {name: float(v.mean()) for name, v in metrics.items()}
    if baseline_metrics is not None:
        report["paired"] = {name: paired_comparison(v, baseline_metrics[name]) for name, v in metrics.items()}

    out.mkdir(parents=True, exist_ok=True)
    files = [str(out / "analysis.json")]
    if plot:
        try:
            files += plot_report(report, out)
        except ImportError:
            notes.append(f"matplotlib is not installed, so no PNG was written: {PLOT_HINT}")
    report["notes"] = notes
    (out / "analysis.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    report["files"] = files
    return report


def _baseline_rows(baseline_file, data_path, config, dataset, users, targets, k, split="test"):
    """The baseline's per-row metrics on ``split``, aligned to the model's rows by raw user and target ids."""
    b_config, b_model, b_dataset, _, b_eval = _load(baseline_file, data_path, split)
    if b_config["dataset"] != config["dataset"]:
        raise AnalysisError(f"The baseline was trained on '{b_config['dataset']}', the model on "
                            f"'{config['dataset']}': compare checkpoints of the same dataset.")
    b_rows = evaluate_rows(b_model, b_eval, {"model": b_model.full_sort_predict}, k)
    key = lambda ds, u, t: list(zip(_raw(ds, ds.uid_field, u), _raw(ds, ds.iid_field, np.clip(t, 0, None))))  # noqa: E731
    position = {pair: i for i, pair in enumerate(key(b_dataset, b_rows["user"], b_rows["target"]))}
    ours = key(dataset, users, targets)
    missing = [pair for pair in ours if pair not in position]
    if missing:
        raise AnalysisError(f"The baseline's {split} split lacks {len(missing)} of the model's {len(ours)} rows "
                            f"(e.g. user {missing[0][0]}): both runs need the same data and split settings.")
    order = np.array([position[pair] for pair in ours])
    return ({f"ndcg@{k}": b_rows["model"]["ndcg"][order], f"recall@{k}": b_rows["model"]["recall"][order]},
            b_config["model"])


# ---------------------------------------------------------------------------------------------- plots
def plot_report(report: Dict[str, Any], out: Path) -> List[str]:
    """The PNG figures of ``report``; raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    written = []
    title = f"{report['model']} on {report['dataset']}"
    if report.get("training_curves"):
        written.append(_plot_curves(plt, report["training_curves"], title, out / "training_curves.png"))
    if report.get("thinking_steps"):
        written.append(_plot_steps(plt, report["thinking_steps"], report["k"], title, out / "thinking_steps.png",
                                   report.get("split", "test")))
    written.append(_plot_groups(plt, report, out / "groups.png"))
    return written


def _plot_curves(plt, curves: Dict[str, Any], title: str, path: Path) -> str:
    from matplotlib.ticker import MaxNLocator

    panels = list(curves["losses"]) + ["valid"]
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    x = curves["epoch"]
    boundaries = [i for i in range(1, len(x)) if curves["stage"][i] != curves["stage"][i - 1]]
    for ax, name in zip(axes.flat, panels):
        ys = curves["valid"] if name == "valid" else curves["losses"][name]
        pts = [(xi, yi) for xi, yi in zip(x, ys) if yi is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", markersize=3, color="tab:green" if name == "valid" else "tab:blue")
        ax.set_title(f"valid {curves['valid_metric']}" if name == "valid" else f"loss: {name} (mean per batch)",
                     fontsize=10)
        ax.set_xlabel("epoch")
        if len(x) <= 12:  # MaxNLocator falls back to fractions for a short range
            ax.set_xticks(list(x))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(-0.5, max(len(x) - 1, 0) + 0.5)
        for b in boundaries:
            ax.axvline(b - 0.5, color="grey", linestyle=":", linewidth=1)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"Training curves: {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def _plot_steps(plt, steps: List[Dict[str, Any]], k: int, title: str, path: Path, split: str = "test") -> str:
    labels = [s["step"].replace("tau_", "τ").replace("mu", "μ") for s in steps]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, metric, color in zip(axes, (f"ndcg@{k}", f"recall@{k}"), ("tab:blue", "tab:orange")):
        values = [s[metric] for s in steps]
        bars = ax.bar(labels, values, color=[color] * (len(values) - 1) + ["tab:red"])
        ax.bar_label(bars, fmt="%.4f", fontsize=8)
        ax.set_title(f"{split} {metric.upper().replace('RECALL', 'Recall')}")
        ax.set_ylim(0, max(values) * 1.2 if max(values) > 0 else 1)
        ax.set_xlabel("scored with (thinking step τ, refined latent μ)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Ranking quality per thinking step (Fig. 4): {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def _plot_groups(plt, report: Dict[str, Any], path: Path) -> str:
    """Per group kind: the metrics (model, and baseline when given) and, with a baseline, the relative gains."""
    k = report["k"]
    baseline = report.get("baseline")
    kinds = list(report["groups"])
    metrics = (f"ndcg@{k}", f"recall@{k}")
    n_rows = 3 if baseline else 2  # NDCG, Recall, then the gains
    fig, axes = plt.subplots(n_rows, len(kinds), figsize=(5.8 * len(kinds), 2.9 * n_rows), squeeze=False)
    for col, kind in enumerate(kinds):
        rows = report["groups"][kind]["rows"]
        labels = [f"{r['group']}\n(n={r['rows']})" for r in rows]
        x = np.arange(len(rows))
        for row, metric in enumerate(metrics):
            ax = axes[row][col]
            if baseline:
                ours = ax.bar(x - 0.2, [r[metric] for r in rows], width=0.4, color="tab:red", label=report["model"])
                theirs = ax.bar(x + 0.2, [r[f"baseline_{metric}"] for r in rows], width=0.4, color="tab:grey",
                                label=baseline["model"])
                ax.bar_label(theirs, fmt="%.3f", fontsize=7)
            else:
                ours = ax.bar(x, [r[metric] for r in rows], width=0.6, color="tab:red", label=report["model"])
            ax.bar_label(ours, fmt="%.3f", fontsize=7)
            ax.set_ylabel(f"{report.get('split', 'test')} {metric}")
            # Head room above the tallest bar for the value labels and the legend.
            ax.set_ylim(0, max([r[metric] for r in rows] + [r.get(f"baseline_{metric}", 0) for r in rows]) * 1.45
                        or 1)
            ax.set_xticks(x, labels, fontsize=8)
            ax.legend(fontsize=8, loc="upper center", ncol=2, frameon=False)
            ax.grid(axis="y", alpha=0.3)
            if row == 0:
                ax.set_title(f"{kind.replace('_', ' ')}: {report['groups'][kind]['description']}", fontsize=10)
        if baseline:
            ax = axes[2][col]
            for offset, metric, color in ((-0.2, metrics[0], "tab:blue"), (0.2, metrics[1], "tab:orange")):
                gains = [r[f"gain_{metric}_pct"] for r in rows]
                bars = ax.bar(x + offset, [g if g is not None else 0.0 for g in gains], width=0.4, color=color,
                              label=metric)
                # A group where the baseline scores 0 has no relative gain: say so instead of drawing 0%.
                ax.bar_label(bars, labels=["n/a" if g is None else f"{g:+.1f}%" for g in gains], fontsize=7)
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_ylabel(f"gain over {baseline['model']} (%)")
            ax.set_xticks(x, labels, fontsize=8)
            ax.margins(y=0.2)
            ax.legend(fontsize=8)
            ax.grid(axis="y", alpha=0.3)
    versus = f" vs {baseline['model']}" if baseline else ""
    fig.suptitle(f"By user history length and target popularity (Fig. 5): {report['model']}{versus} "
                 f"on {report['dataset']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
