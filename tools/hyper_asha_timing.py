"""Wall time of one small Ray Tune search with and without ASHA, measured in the same command.

    OMP_NUM_THREADS=1 python tools/hyper_asha_timing.py [--dataset ml-100k] [--epochs 6]

Four SASRec trials (learning rates 1e-2, 3e-3, 1e-3, 1e-4), one at a time on one CPU, first with Ray's FIFO
scheduler (every trial runs all its epochs), then with ASHA (grace period 1, reduction factor 2). Prints one
JSON object: wall seconds, validations per trial and the best trial of each search.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import ray
import torch

from recbole_diffureason.hyper import run_ray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="asha-timing-"))
    params = work / "lr.hyper"
    params.write_text("learning_rate choice [0.01,0.003,0.001,0.0001]\n", encoding="utf-8")
    fixed = {"model": "SASRec", "dataset": args.dataset, "epochs": args.epochs, "stopping_step": args.epochs,
             "MAX_ITEM_LIST_LENGTH": 20, "state": "ERROR", "show_progress": False,
             "checkpoint_dir": str(work / "saved")}
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)  # started once, outside the timings
    report = {"command": "OMP_NUM_THREADS=1 python tools/hyper_asha_timing.py " + " ".join(
        f"--{k}={v}" for k, v in vars(args).items()), "machine": platform.platform(),
        "threads": torch.get_num_threads(), "runs": {}}
    try:
        for scheduler in ("fifo", "asha"):
            start = time.time()
            result = run_ray(str(params), fixed, algo="exhaustive", max_concurrent=1, cpus_per_trial=1,
                             local_dir=str(work / f"ray-{scheduler}"), scheduler=scheduler, grace_period=1,
                             reduction_factor=2)
            report["runs"][scheduler] = {
                "wall_seconds": round(time.time() - start, 1),
                "validations": {str(t["params"]["learning_rate"]): t["validations"] for t in result["trials"]},
                "best_params": result["best_params"], "best_valid_score": result["best_valid_score"],
            }
    finally:
        ray.shutdown()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
