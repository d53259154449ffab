"""Command line: ``run_recbole_dr.py [train] --model=M --dataset=D [--config_files="a.yaml b.yaml"] [--key=value ...]``.

Sub-commands (``SUBCOMMANDS``, listed by ``--help``): ``train`` (the default), ``convert`` (public dataset files
-> RecBole atomic files), ``list`` (available models), ``recommend`` (serve a checkpoint), ``hyper``
(hyper-parameter search, also ``run_hyper_dr.py``), ``group`` (several models, one table, also
``run_recbole_group_dr.py``), ``analyze`` (training curves and the paper's analyses of a checkpoint) and
``tokenize`` (Semantic IDs for a converted dataset).
Bad input gets one ``error: ...`` line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional, Sequence

from recbole_diffureason.keys import ConfigError


SUBCOMMANDS = {
    "train": "train and evaluate one model (the default: run_recbole_dr.py --model=M --dataset=D)",
    "convert": "public dataset files (text, LC-Rec JSON) -> RecBole atomic files",
    "list": "every model --model accepts",
    "recommend": "top-k items for a user or a raw history from a checkpoint",
    "hyper": "hyper-parameter search, hyperopt or Ray Tune (also run_hyper_dr.py)",
    "group": "several models on one dataset, one protocol, one markdown and LaTeX table "
             "(also run_recbole_group_dr.py)",
    "analyze": "training curves, thinking steps and user/item groups of a checkpoint, as JSON and PNG",
    "tokenize": "Semantic IDs for a converted dataset (RQ-VAE over item text or embeddings, or published SIDs)",
}


def fail(err: Exception) -> int:
    """Bad input: one ``error: ...`` line on stderr and exit code 2."""
    print(f"error: {err}", file=sys.stderr)
    return 2


def _subcommand_help() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, text in SUBCOMMANDS.items()]
    return ("sub-commands (run_recbole_dr.py <sub-command> --help for each):\n" + "\n".join(lines))


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one ``error: ...`` line (ConfigError, exit code 2 in ``main``)."""

    def error(self, message: str):  # argparse's own error() prints the usage block and exits
        raise ConfigError(f"{self.prog}: {message} (see {self.prog} --help).")


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_recbole_dr.py",
        description="Train and evaluate a sequential recommender (this plugin's or RecBole's) with RecBole. "
        "Any other --key=value overrides a config key.",
        epilog=_subcommand_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", "-m", default=None, help="model name, e.g. DiffuReasonSASRec or SASRec")
    parser.add_argument("--dataset", "-d", default=None, help="dataset name, e.g. ml-100k or Amazon_Beauty")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files, later ones win")
    parser.add_argument("--list_models", action="store_true", help="print the available models and exit")
    add_distributed_arguments(parser)
    return parser


def add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
    """RecBole's DDP flags, shared by a single run and a group of runs."""
    ddp = parser.add_argument_group("distributed training (RecBole's arguments; gloo on CPU, NCCL on GPUs)")
    ddp.add_argument("--nproc", type=int, default=1, help="processes to start on this machine")
    ddp.add_argument("--world_size", type=int, default=-1, help="total processes over all machines (-1: nproc)")
    ddp.add_argument("--ip", default="localhost", help="address of the rank-0 machine")
    ddp.add_argument("--port", default="5678", help="free port on the rank-0 machine")
    ddp.add_argument("--group_offset", type=int, default=0, help="rank of this machine's first process")


def distributed_arguments(args: argparse.Namespace) -> dict:
    """The parsed DDP flags as keyword arguments of ``run`` and ``run_group``."""
    return {key: getattr(args, key) for key in ("nproc", "world_size", "ip", "port", "group_offset")}


def _split_overrides(unknown: List[str]) -> List[str]:
    bad = [a for a in unknown if not (a.startswith("--") and "=" in a)]
    if bad:
        raise ConfigError(f"Cannot read argument(s) {' '.join(bad)}: write config overrides as --key=value.")
    return unknown


def print_models() -> None:
    from recbole_diffureason.registry import list_models

    models = list_models()
    print("Plugin models: " + ", ".join(models["plugin"]))
    print("RecBole models: " + ", ".join(models["recbole"]))


def train_main(argv: Sequence[str]) -> int:
    args, unknown = _train_parser().parse_known_args(argv)
    if args.list_models:
        print_models()
        return 0
    from recbole_diffureason.checkpoint import CheckpointError
    from recbole_diffureason.data.locate import DatasetNotFoundError
    from recbole_diffureason.quick_start import run
    from recbole_diffureason.registry import UnknownModelError

    try:
        overrides = _split_overrides(unknown)
        if not args.model or not args.dataset:
            raise ConfigError("Both --model and --dataset are required, e.g. --model=SASRec --dataset=ml-100k.")
        files = args.config_files.split() if args.config_files else None
        result = run(args.model, args.dataset, config_file_list=files, cmd_args=overrides,
                     **distributed_arguments(args))
    except (ConfigError, UnknownModelError, DatasetNotFoundError, CheckpointError) as err:
        # ConfigError covers DatasetFieldError (a missing time column); CheckpointError a resume that cannot be.
        return fail(err)
    if result is None:  # a machine without rank 0 in a multi-machine run
        return 0
    summary = {k: result[k] for k in ("model", "dataset", "best_valid_result", "test_result", "results_file")}
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _hyper_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="run_hyper_dr.py",
        description="Hyper-parameter search with RecBole's HyperTuning (hyperopt) or Ray Tune; trials are "
        "ranked by their best validation score. Takes RecBole's run_hyper.py flags; model and dataset may come "
        "from --config_files. Other --key=value arguments are fixed for every trial.",
    )
    parser.add_argument("--model", "-m", default=None, help="model name (default: 'model' in --config_files)")
    parser.add_argument("--dataset", "-d", default=None, help="dataset name (default: 'dataset' in --config_files)")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files for every trial")
    parser.add_argument("--params_file", default=None, help="search space (default: properties/hyper/<model>.hyper)")
    parser.add_argument("--tool", type=str.lower, choices=("hyperopt", "ray"), default="hyperopt",
                        help="Hyperopt (RecBole's HyperTuning) or Ray (Ray Tune); any case")
    parser.add_argument("--algo", type=str.lower, choices=("exhaustive", "random", "bayes"), default="exhaustive")
    parser.add_argument("--max_evals", type=int, default=100, help="trials for random/bayes (hyperopt)")
    parser.add_argument("--early_stop", type=int, default=None, help="stop after this many trials without gain")
    parser.add_argument("--num_samples", type=int, default=10, help="trials for random search (ray)")
    parser.add_argument("--max_concurrent", type=int, default=1, help="trials at once (ray)")
    parser.add_argument("--cpus_per_trial", type=float, default=1.0, help="CPU cores per trial (ray)")
    parser.add_argument("--scheduler", type=str.lower, choices=("fifo", "asha"), default="fifo",
                        help="ray: 'asha' stops weak trials after each validation; 'fifo' runs every trial out")
    parser.add_argument("--grace_period", type=int, default=1, help="asha: validations before a trial can stop")
    parser.add_argument("--reduction_factor", type=float, default=2.0,
                        help="asha: the top 1/reduction_factor of each rung goes on")
    parser.add_argument("--output_file", default=None, help="result file (default: hyper/<model>-<dataset>.result)")
    parser.add_argument("--display_file", default=None, help="HTML plot of the search (hyperopt, needs plotly)")
    return parser


def model_and_dataset(model: Optional[str], dataset: Optional[str], config_files: Optional[List[str]],
                      example: str) -> tuple:
    """``--model``/``--dataset``, else the last of ``config_files`` that sets them (as RecBole reads them)."""
    from recbole_diffureason.config import read_yaml

    for file in reversed(config_files or []):
        values = read_yaml(file)
        model = model or values.get("model")
        dataset = dataset or values.get("dataset")
    if not model or not dataset:
        missing = " and ".join(n for n, v in (("model", model), ("dataset", dataset)) if not v)
        raise ConfigError(f"No {missing} given: pass --model=<Name> --dataset=<name> or set them in a "
                          f"--config_files YAML, e.g. {example}.")
    return str(model), str(dataset)


def hyper_main(argv: Sequence[str]) -> int:
    from recbole_diffureason import hyper
    from recbole_diffureason.config import parse_cmd_args, properties_dir
    from recbole_diffureason.registry import UnknownModelError

    try:
        args, unknown = _hyper_parser().parse_known_args(argv)
        files = args.config_files.split() if args.config_files else None
        model, dataset = model_and_dataset(args.model, args.dataset, files,
                                           "run_hyper_dr.py --config_files=sasrec.yaml --params_file=my.hyper")
        if args.tool == "hyperopt" and args.scheduler != "fifo":
            raise ConfigError(f"--scheduler={args.scheduler} needs --tool=Ray (hyperopt runs every trial to the end).")
        fixed = {**_typed(parse_cmd_args(_split_overrides(unknown))), "model": model, "dataset": dataset}
        params_file = args.params_file or str(properties_dir() / "hyper" / f"{model}.hyper")
        output = args.output_file or f"hyper/{model}-{dataset}.result"
        if args.tool == "hyperopt":
            result = hyper.run_hyperopt(params_file, fixed, files, args.algo, args.max_evals, args.early_stop,
                                        output, args.display_file)
        else:
            result = hyper.run_ray(params_file, fixed, files, args.algo, args.num_samples, args.max_concurrent,
                                   args.cpus_per_trial, output, scheduler=args.scheduler,
                                   grace_period=args.grace_period, reduction_factor=args.reduction_factor)
    except (ConfigError, UnknownModelError) as err:
        return fail(err)
    print(json.dumps({"best_params": result["best_params"], "best_valid_score": result["best_valid_score"],
                      "output_file": output}, indent=2, default=str))
    return 0


def _group_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="run_recbole_group_dr.py",
        description="Train and evaluate several models on one dataset with one protocol (the same config files "
        "and --key=value overrides), then write one markdown and one LaTeX table (RecBole's run_recbole_group.py "
        "flags).",
    )
    parser.add_argument("--model_list", "-m", required=True,
                        help="comma-separated models, e.g. SASRec,DiffuReasonSASRec")
    parser.add_argument("--dataset", "-d", default=None, help="dataset name (default: 'dataset' in --config_files)")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files for every model")
    parser.add_argument("--output_dir", default=None, help="folder for results.md/.json and the .tex files "
                        "(default: group/<dataset>/)")
    parser.add_argument("--valid_latex", default=None, help="LaTeX table of the best validation results")
    parser.add_argument("--test_latex", default=None, help="LaTeX table of the test results")
    add_distributed_arguments(parser)
    return parser


def group_main(argv: Sequence[str]) -> int:
    from recbole_diffureason.data.locate import DatasetNotFoundError
    from recbole_diffureason.group import parse_model_list, run_group
    from recbole_diffureason.registry import UnknownModelError

    try:
        args, unknown = _group_parser().parse_known_args(argv)
        overrides = _split_overrides(unknown)
        models = parse_model_list(args.model_list)
        files = args.config_files.split() if args.config_files else None
        dataset = args.dataset or model_and_dataset(models[0], None, files, "--dataset=ml-100k")[1]
        summary = run_group(models, dataset, config_file_list=files, cmd_args=overrides, output_dir=args.output_dir,
                            valid_latex=args.valid_latex, test_latex=args.test_latex,
                            **distributed_arguments(args))
    except (ConfigError, UnknownModelError, DatasetNotFoundError) as err:
        return fail(err)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _analyze_parser() -> argparse.ArgumentParser:
    from recbole_diffureason.analysis import SPLITS

    parser = _Parser(
        prog="run_recbole_dr.py analyze",
        description="Training curves (every loss term and the validation metric per epoch) and, for DiffuReason "
        "models, the paper's analyses: test NDCG/Recall of each thinking step and of mu (Fig. 4), and by user "
        "history length and target popularity groups (Fig. 5), against --baseline_file when given. Writes "
        "analysis.json and, with matplotlib, training_curves.png, thinking_steps.png and groups.png.",
    )
    parser.add_argument("--model_file", required=True, help="checkpoint written by a run (saved/*.pth)")
    parser.add_argument("--results_file", default=None,
                        help="the run's results JSON (default: the one next to the checkpoint that names it)")
    parser.add_argument("--baseline_file", default=None, help="a second checkpoint on the same data, e.g. SASRec")
    parser.add_argument("--out", default=None, help="output folder (default: analysis/<checkpoint name>/)")
    parser.add_argument("--k", type=int, default=10, help="cut-off of NDCG@k and Recall@k (default 10)")
    parser.add_argument("--groups", type=int, default=4, help="quantile groups per analysis (default 4)")
    parser.add_argument("--split", choices=SPLITS, default="test",
                        help="split the per-user analyses score (default test, as the paper's figures; valid is where "
                             "a choice between options may be made)")
    parser.add_argument("--data_path", default=None, help="where the dataset lives now, if it moved")
    return parser


def analyze_main(argv: Sequence[str]) -> int:
    from recbole_diffureason.analysis import analyze

    try:
        args = _analyze_parser().parse_args(argv)
        report = analyze(args.model_file, args.results_file, args.baseline_file, args.out, args.k, args.groups,
                         args.data_path, split=args.split)
    except (ValueError, FileNotFoundError) as err:  # ConfigError, AnalysisError, an unloadable checkpoint
        return fail(err)
    for note in report["notes"]:  # e.g. no matplotlib: the JSON is written, the note says how to get the PNGs
        print(f"note: {note}", file=sys.stderr)
    summary = {"files": report["files"], "overall": report["overall"]}
    if "paired" in report:
        summary["paired"] = report["paired"]
    print(json.dumps(summary, indent=2))
    return 0


def _typed(values: dict) -> dict:
    from recbole_diffureason.config import typed_values

    return typed_values(values)


def _recommend_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run_recbole_dr.py recommend",
                                     description="Top-k items from a saved checkpoint, as JSON.")
    parser.add_argument("--model_file", required=True, help="checkpoint written by a run (saved/*.pth)")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="raw user id: recommend from the user's latest history in the dataset")
    who.add_argument("--history", help="raw item ids, oldest first, separated by spaces or commas")
    parser.add_argument("--k", type=int, default=10, help="number of items (default 10)")
    parser.add_argument("--exclude_seen", action="store_true", help="drop items already in the history")
    parser.add_argument("--data_path", default=None, help="where the dataset lives now, if it moved")
    return parser


def recommend_main(argv: Sequence[str]) -> int:
    from recbole_diffureason.serving import Recommender, UnknownIdError

    args = _recommend_parser().parse_args(argv)
    try:
        recommender = Recommender(args.model_file, {"data_path": args.data_path} if args.data_path else None)
        if args.user is not None:
            items = recommender.for_user(args.user, args.k, args.exclude_seen)
        else:
            items = recommender.for_history(args.history.replace(",", " ").split(), args.k, args.exclude_seen)
    except (UnknownIdError, ValueError, FileNotFoundError) as err:
        return fail(err)
    print(json.dumps([{"item": item, "score": score} for item, score in items], indent=2))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        return train_main(argv[1:])
    if argv and argv[0] == "group":
        return group_main(argv[1:])
    if argv and argv[0] == "analyze":
        return analyze_main(argv[1:])
    if argv and argv[0] == "convert":
        from recbole_diffureason.data.convert import main as convert_main

        return convert_main(argv[1:])
    if argv and argv[0] == "recommend":
        return recommend_main(argv[1:])
    if argv and argv[0] == "tokenize":
        from recbole_diffureason.sid.tokenize import tokenize_main

        return tokenize_main(argv[1:])
    if argv and argv[0] == "hyper":
        return hyper_main(argv[1:])
    if argv and argv[0] == "list":
        print_models()
        return 0
    return train_main(argv)
