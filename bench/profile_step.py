"""Per-batch cost of one training step and one full-sort evaluation batch, SASRec vs DiffuReasonSASRec.

Usage: python bench/profile_step.py --dataset=Amazon_Beauty [--batches=5] [--key=value ...]
Prints seconds per training batch and per evaluation batch for both models, measured in the same process.
"""

import argparse
import time

import torch

from recbole_diffureason.quick_start import build_config, build_model, prepare_data
from recbole_diffureason.registry import get_trainer


def time_model(model_name, dataset, batches, overrides):
    config = build_config(model_name, dataset, cmd_args=overrides, config_dict={"show_progress": False})
    _, train, _, test = prepare_data(config)
    model = build_model(config, train)
    trainer = get_trainer(config["MODEL_TYPE"], model_name)(config, model)
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
    args, overrides = parser.parse_known_args()
    base_train, base_eval, _ = time_model("SASRec", args.dataset, args.batches, overrides)
    dr_train, dr_eval, diag = time_model("DiffuReasonSASRec", args.dataset, args.batches, overrides)
    print(f"SASRec            train {base_train:.3f} s/batch  eval {base_eval:.3f} s/batch")
    print(f"DiffuReasonSASRec train {dr_train:.3f} s/batch  eval {dr_eval:.3f} s/batch")
    print(f"ratios: train {dr_train / base_train:.2f}x  eval {dr_eval / base_eval:.2f}x  diagnostics {diag}")
