"""One benchmark run in its own process: ``python -m bench.worker '<json spec>'`` (called by bench.run_benchmark,
from the repository root)."""

import json
import os
import sys
import time

import torch

from recbole_diffureason.quick_start import run


def main() -> int:
    spec = json.loads(sys.argv[1])
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads:
        torch.set_num_threads(threads)
    start = time.time()
    result = run(spec["model"], spec["dataset"], config_dict=spec["config_dict"], cmd_args=[],
                 evaluate_test=spec["evaluate_test"])
    history = result["history"]
    scored = [h for h in history if "valid_score" in h]
    best = max(scored, key=lambda h: h["valid_score"]) if scored else None
    out = {
        "tag": spec["tag"],
        "name": spec["tag"].rsplit("-seed", 1)[0],
        "model": spec["model"],
        "seed": spec["config_dict"]["seed"],
        "overrides": spec["config_dict"],
        "finished": True,
        "best_valid_result": result["best_valid_result"],
        "test_result": result["test_result"],
        "best_epoch": best["epoch"] if best else None,
        "history": history,
        "test_eval_seconds": result["test_eval_seconds"],
        "wall_seconds": time.time() - start,
        "torch": torch.__version__,
        "device": str(torch.device("cuda") if torch.cuda.is_available() else "cpu"),
        "threads": torch.get_num_threads(),
        "runner_command": spec.get("runner_command"),
        "machine": spec.get("machine"),
    }
    with open(spec["result_file"], "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
