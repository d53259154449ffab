"""Command line: ``run_recbole_dr.py --model=M --dataset=D [--config_files="a.yaml b.yaml"] [--key=value ...]``.

Sub-commands: ``convert`` (public dataset files -> RecBole atomic files), ``list`` (available models),
``hyper`` (hyper-parameter search, also ``run_hyper_dr.py``) and ``recommend`` (serve a checkpoint).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional, Sequence

from recbole_diffureason.keys import ConfigError


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_recbole_dr.py",
        description="Train and evaluate a sequential recommender (this plugin's or RecBole's) with RecBole. "
        "Any other --key=value overrides a config key. Sub-commands: convert, list.",
    )
    parser.add_argument("--model", "-m", default=None, help="model name, e.g. DiffuReasonSASRec or SASRec")
    parser.add_argument("--dataset", "-d", default=None, help="dataset name, e.g. ml-100k or Amazon_Beauty")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files, later ones win")
    parser.add_argument("--list_models", action="store_true", help="print the available models and exit")
    ddp = parser.add_argument_group("distributed training (RecBole's arguments; gloo on CPU, NCCL on GPUs)")
    ddp.add_argument("--nproc", type=int, default=1, help="processes to start on this machine")
    ddp.add_argument("--world_size", type=int, default=-1, help="total processes over all machines (-1: nproc)")
    ddp.add_argument("--ip", default="localhost", help="address of the rank-0 machine")
    ddp.add_argument("--port", default="5678", help="free port on the rank-0 machine")
    ddp.add_argument("--group_offset", type=int, default=0, help="rank of this machine's first process")
    return parser


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
    from recbole_diffureason.data.locate import DatasetNotFoundError
    from recbole_diffureason.quick_start import run
    from recbole_diffureason.registry import UnknownModelError

    try:
        overrides = _split_overrides(unknown)
        if not args.model or not args.dataset:
            raise ConfigError("Both --model and --dataset are required, e.g. --model=SASRec --dataset=ml-100k.")
        files = args.config_files.split() if args.config_files else None
        result = run(args.model, args.dataset, config_file_list=files, cmd_args=overrides, nproc=args.nproc,
                     world_size=args.world_size, ip=args.ip, port=args.port, group_offset=args.group_offset)
    except (ConfigError, UnknownModelError, DatasetNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if result is None:  # a machine without rank 0 in a multi-machine run
        return 0
    summary = {k: result[k] for k in ("model", "dataset", "best_valid_result", "test_result", "results_file")}
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _hyper_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_hyper_dr.py",
        description="Hyper-parameter search with RecBole's HyperTuning (hyperopt) or Ray Tune; trials are "
        "ranked by their best validation score. Other --key=value arguments are fixed for every trial.",
    )
    parser.add_argument("--model", "-m", required=True)
    parser.add_argument("--dataset", "-d", required=True)
    parser.add_argument("--config_files", default=None, help="space-separated YAML files for every trial")
    parser.add_argument("--params_file", default=None, help="search space (default: properties/hyper/<model>.hyper)")
    parser.add_argument("--tool", choices=("hyperopt", "ray"), default="hyperopt")
    parser.add_argument("--algo", choices=("exhaustive", "random", "bayes"), default="exhaustive")
    parser.add_argument("--max_evals", type=int, default=100, help="trials for random/bayes (hyperopt)")
    parser.add_argument("--early_stop", type=int, default=None, help="stop after this many trials without gain")
    parser.add_argument("--num_samples", type=int, default=10, help="trials for random search (ray)")
    parser.add_argument("--max_concurrent", type=int, default=1, help="trials at once (ray)")
    parser.add_argument("--cpus_per_trial", type=float, default=1.0, help="CPU cores per trial (ray)")
    parser.add_argument("--output_file", default=None, help="result file (default: hyper/<model>-<dataset>.result)")
    parser.add_argument("--display_file", default=None, help="HTML plot of the search (hyperopt, needs plotly)")
    return parser


def hyper_main(argv: Sequence[str]) -> int:
    from recbole_diffureason import hyper
    from recbole_diffureason.config import parse_cmd_args, properties_dir
    from recbole_diffureason.registry import UnknownModelError

    args, unknown = _hyper_parser().parse_known_args(argv)
    try:
        fixed = {**_typed(parse_cmd_args(_split_overrides(unknown))), "model": args.model, "dataset": args.dataset}
        params_file = args.params_file or str(properties_dir() / "hyper" / f"{args.model}.hyper")
        output = args.output_file or f"hyper/{args.model}-{args.dataset}.result"
        files = args.config_files.split() if args.config_files else None
        if args.tool == "hyperopt":
            result = hyper.run_hyperopt(params_file, fixed, files, args.algo, args.max_evals, args.early_stop,
                                        output, args.display_file)
        else:
            result = hyper.run_ray(params_file, fixed, files, args.algo, args.num_samples, args.max_concurrent,
                                   args.cpus_per_trial, output)
    except (ConfigError, UnknownModelError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"best_params": result["best_params"], "best_valid_score": result["best_valid_score"],
                      "output_file": output}, indent=2, default=str))
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
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps([{"item": item, "score": score} for item, score in items], indent=2))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "convert":
        from recbole_diffureason.data.convert import main as convert_main

        return convert_main(argv[1:])
    if argv and argv[0] == "recommend":
        return recommend_main(argv[1:])
    if argv and argv[0] == "hyper":
        return hyper_main(argv[1:])
    if argv and argv[0] == "list":
        print_models()
        return 0
    return train_main(argv)
