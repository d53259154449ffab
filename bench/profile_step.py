"""Per-batch cost of one training step and one full-sort evaluation batch, SASRec vs other models.

Usage: python -m bench.profile_step --dataset=Amazon_Beauty [--batches=5] [--models=DiffuReasonSASRec,...]
       [--stage=rpt] [--key=value ...]
Prints seconds per training batch and per evaluation batch for SASRec and each model, measured in the same
process, and each model's ratio to SASRec. ``--stage`` switches models with training stages (LARES: spt, rpt)
to that stage before timing.
"""

import argparse
import time

import torch

from recbole_diffureason.quick_start import build_config, build_model, prepare_data
from recbole_diffureason.registry import get_trainer


def time_model(model_name, dataset, batches, overrides, stage=None):
    config = build_config(model_name, dataset, cmd_args=overrides, config_dict={"show_progress": False})
    _, train, _, test = prepare_data(config)
    model = build_model(config, train)
    trainer = get_trainer(config["MODEL_TYPE"], model_name)(config, model)
    if stage and hasattr(model, "set_training_stage"):
        model.set_training_stage(stage)
    model.train()
    it = iter(train)
    times = []
    for i in range(batches + 1):
        batch = next(it).to(config["device"])
        start = time.perf_counter()
        trainer.optimizer.zero_grad()
        losses = model.calculate_loss(batch)
        loss = sum(losses) if isinstance(losses, tuple) else losses
        loss.backward()
        trainer.optimizer.step()
        if config["device"].type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    model.eval()
    eval_times = []
    with torch.no_grad():
        for i, data in enumerate(test):
            if i > batches:
                break
            start = time.perf_counter()
            model.full_sort_predict(data[0].to(config["device"]))
            if config["device"].type == "cuda":
                torch.cuda.synchronize()
            eval_times.append(time.perf_counter() - start)
    diag = model.pop_diagnostics() if hasattr(model, "pop_diagnostics") else {}
    return sum(times) / len(times), sum(eval_times) / len(eval_times), diag


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="Amazon_Beauty")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--models", default="DiffuReasonSASRec", help="comma-separated models timed against SASRec")
    parser.add_argument("--stage", default=None, help="training stage to time (e.g. LARES: spt or rpt)")
    args, overrides = parser.parse_known_args()
    base_train, base_eval, _ = time_model("SASRec", args.dataset, args.batches, overrides)
    print(f"{'SASRec':<18} train {base_train:.3f} s/batch  eval {base_eval:.3f} s/batch")
    for name in args.models.split(","):
        train_s, eval_s, diag = time_model(name, args.dataset, args.batches, overrides, args.stage)
        print(f"{name:<18} train {train_s:.3f} s/batch  eval {eval_s:.3f} s/batch  "
              f"ratios: train {train_s / base_train:.2f}x  eval {eval_s / base_eval:.2f}x  diagnostics {diag}")
