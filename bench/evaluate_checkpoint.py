"""Score a trained checkpoint on the validation split under evaluation-time options, without training.

    python -m bench.evaluate_checkpoint bench/work/beauty_cpu_seeds/DR-anchor-cos-natural-seed2020.pth \\
        --set eval_noise_draws=1 --set eval_noise_draws=4 --set eval_init_noise=zero

(from the repository root). Each ``--set KEY=VALUE`` (VALUE read as YAML) is one evaluation of the same
weights; the checkpoint's own configuration is always scored first. Only keys that act at evaluation time make
sense here (the weights stay as trained). The validation split is the default and the only one a choice between
options may be made on; ``--split test`` exists to report the chosen option once. One JSON line per evaluation.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml


def parse_option(text: str) -> Tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set needs KEY=VALUE, got {text!r}.")
    return key, yaml.safe_load(value)


def evaluate(model_file: str, option: Optional[Tuple[str, Any]], split: str, data_path: Optional[str]) -> Dict[str, Any]:
    from recbole_diffureason.quick_start import load_data_and_model
    from recbole_diffureason.registry import get_trainer

    overrides: Dict[str, Any] = {"show_progress": False}
    if data_path:
        overrides["data_path"] = data_path
    if option:
        overrides[option[0]] = option[1]
    config, model, _, _, valid_data, test_data = load_data_and_model(model_file, overrides)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    start = time.time()
    result = trainer.evaluate(valid_data if split == "valid" else test_data, load_best_model=False)
    return {"checkpoint": model_file, "split": split, "option": dict([option]) if option else {},
            "seconds": round(time.time() - start, 2), "result": {k: float(v) for k, v in result.items()}}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--set", dest="options", action="append", default=[], help="KEY=VALUE, one evaluation each")
    parser.add_argument("--split", choices=("valid", "test"), default="valid")
    parser.add_argument("--data_path", default=None, help="folder holding <dataset>/ when the data moved")
    args = parser.parse_args(argv)
    options: List[Optional[Tuple[str, Any]]] = [None] + [parse_option(o) for o in args.options]
    for option in options:
        print(json.dumps(evaluate(args.checkpoint, option, args.split, args.data_path)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
