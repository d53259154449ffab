"""Many models, one protocol, one table: RecBole's ``run_recbole_group.py`` through this plugin.

Every model runs through ``quick_start.run`` with the same dataset, config files, config dict and
command-line overrides. All configs are built (and so checked) before the first model trains, so a typo in
the last model name or a bad key stops the group at once instead of after hours. The tables: markdown
(``results.md``, best value of each column in bold) and LaTeX (RecBole's ``list_to_latex``, as
``run_recbole_group.py`` writes them), for the best validation results and the test results, plus
``results.json`` with each model's result and results file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from recbole_diffureason.keys import ConfigError


def parse_model_list(text: str) -> List[str]:
    """``"SASRec,DiffuReasonSASRec"`` (commas and/or spaces) -> names; empty or repeated names are errors."""
    models = [m for m in text.replace(",", " ").split() if m]
    if not models:
        raise ConfigError("--model_list is empty: give comma-separated model names, e.g. "
                          "--model_list=SASRec,DiffuReasonSASRec.")
    repeated = sorted({m for m in models if models.count(m) > 1})
    if repeated:
        raise ConfigError(f"--model_list names {', '.join(repeated)} more than once; each model runs once.")
    return models


def check_group(models: Sequence[str], dataset: str, config_file_list: Optional[List[str]] = None,
                config_dict: Optional[dict] = None, cmd_args: Optional[Sequence[str]] = None) -> None:
    """Build every model's config before anything trains: unknown models, datasets and bad keys stop here."""
    from recbole_diffureason.data.locate import check_dataset
    from recbole_diffureason.quick_start import build_config

    for i, model in enumerate(models):
        config = build_config(model, dataset, config_file_list, config_dict, list(cmd_args or []))
        if i == 0:
            check_dataset(config)


def run_group(
    models: Sequence[str],
    dataset: str,
    config_file_list: Optional[List[str]] = None,
    config_dict: Optional[dict] = None,
    cmd_args: Optional[Sequence[str]] = None,
    output_dir: Optional[str] = None,
    valid_latex: Optional[str] = None,
    test_latex: Optional[str] = None,
    **run_kwargs: Any,
) -> Dict[str, Any]:
    """Train and evaluate ``models`` on ``dataset`` one after another; write the tables; return the summary.

    ``output_dir`` defaults to ``group/<dataset>/``; ``valid_latex`` and ``test_latex`` (RecBole's flags)
    default to ``valid.tex`` and ``test.tex`` in it. ``run_kwargs`` go to ``quick_start.run`` (DDP arguments).
    """
    from recbole_diffureason.quick_start import run

    check_group(models, dataset, config_file_list, config_dict, cmd_args)
    out = Path(output_dir or Path("group") / dataset)
    results = []
    for model in models:
        result = run(model, dataset, config_file_list=config_file_list, config_dict=config_dict,
                     cmd_args=list(cmd_args or []), **run_kwargs)
        if result is None:  # a machine without rank 0 in a multi-machine group
            continue
        results.append(result)
    if not results:
        return {"models": list(models), "dataset": dataset, "results": []}
    files = write_tables(results, dataset, out, valid_latex, test_latex)
    return {"models": list(models), "dataset": dataset, "files": files,
            "results": [{k: r.get(k) for k in ("model", "best_valid_result", "test_result", "results_file",
                                               "saved_model_file")} for r in results]}


def _rows(results: Sequence[Dict[str, Any]], key: str) -> Tuple[List[Dict[str, Any]], List[str]]:
    rows, columns = [], []
    for r in results:
        metrics = dict(r.get(key) or {})
        columns += [c for c in metrics if c not in columns]
        rows.append({"Model": r["model"], **{c: float(v) for c, v in metrics.items()}})
    return rows, columns


def markdown_table(rows: List[Dict[str, Any]], columns: List[str], bigger: bool, decimals: int = 4) -> str:
    """A markdown table with the best value of each metric column in bold."""
    best = {}
    for c in columns:
        values = [r[c] for r in rows if r.get(c) is not None]
        best[c] = (max(values) if bigger else min(values)) if values else None
    lines = ["| Model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            text = "" if v is None else f"{v:.{decimals}f}"
            cells.append(f"**{text}**" if v is not None and v == best[c] and len(rows) > 1 else text)
        lines.append(f"| {r['Model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def latex_table(rows: List[Dict[str, Any]], columns: List[str], bigger: bool) -> str:
    """RecBole's ``list_to_latex`` (best in bold); a plain tabular when pandas' Styler (jinja2) is missing."""
    if not rows or not columns:
        return ""
    try:
        from recbole.utils import list_to_latex

        return list_to_latex(convert_list=rows, bigger_flag=bigger, subset_columns=columns)[1]
    except ImportError:
        body = [" & ".join(["Model"] + columns) + r" \\", r"\hline"]
        for r in rows:
            body.append(" & ".join([r["Model"]] + [f"{r[c]:.4f}" if r.get(c) is not None else "" for c in columns])
                        + r" \\")
        return "\\begin{tabular}{" + "c" * (len(columns) + 1) + "}\n" + "\n".join(body) + "\n\\end{tabular}\n"


def write_tables(results: Sequence[Dict[str, Any]], dataset: str, out: Path, valid_latex: Optional[str] = None,
                 test_latex: Optional[str] = None) -> Dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    bigger = bool(results[0].get("valid_score_bigger", True))
    valid_rows, valid_cols = _rows(results, "best_valid_result")
    test_rows, test_cols = _rows(results, "test_result")
    files = {"markdown": str(out / "results.md"), "valid_latex": str(valid_latex or out / "valid.tex"),
             "test_latex": str(test_latex or out / "test.tex"), "json": str(out / "results.json")}
    text = f"# {', '.join(r['model'] for r in results)} on {dataset}\n\n"
    text += "## Best validation results\n\n" + markdown_table(valid_rows, valid_cols, bigger) + "\n"
    text += "## Test results (best-validation checkpoint)\n\n" + (
        markdown_table(test_rows, test_cols, bigger) if test_cols else "No test results.\n")
    Path(files["markdown"]).write_text(text, encoding="utf-8")
    for name, rows, cols in (("valid_latex", valid_rows, valid_cols), ("test_latex", test_rows, test_cols)):
        Path(files[name]).parent.mkdir(parents=True, exist_ok=True)
        Path(files[name]).write_text(latex_table(rows, cols, bigger), encoding="utf-8")
    summary = [{k: r.get(k) for k in ("model", "best_valid_result", "test_result", "results_file", "saved_model_file")}
               for r in results]
    Path(files["json"]).write_text(json.dumps({"dataset": dataset, "results": summary}, indent=2, default=str),
                                   encoding="utf-8")
    return files
