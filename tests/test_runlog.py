"""Logs that read like RecBole's: the train-loss line (sums), the FLOPs line (guarded, RNG-neutral), the environment."""

from __future__ import annotations

import logging
import random
import re

import numpy as np
import pytest
import torch
from recbole.utils import ModelType

from recbole_diffureason import checkpoint, quick_start, runlog
from recbole_diffureason.quick_start import build_config, prepare_data, run

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def log_lines(caplog):
    return [ANSI.sub("", m) for m in caplog.messages]


def n_train_batches(model: str, config: dict) -> int:
    return len(prepare_data(build_config(model, "tiny", config_dict=config, cmd_args=[]))[1])


def numbers(line: str, names) -> dict:
    return {n: float(re.search(rf"\b{re.escape(n)}: (-?[0-9.]+)", line).group(1)) for n in names}


def test_train_loss_line_is_recbole_sum_then_named_terms_and_flops_and_environment(tiny_config, caplog):
    caplog.set_level(logging.INFO)
    config = dict(tiny_config, state="INFO")
    result = run("DiffuReasonSASRec", "tiny", config_dict=config, cmd_args=[])
    lines = log_lines(caplog)
    line = next(m for m in lines if m.startswith("epoch 0 training"))
    names = ["rec", "diff", "align", "kl", "backbone_rec", "thought_rec"]
    # RecBole's own format for a tuple of losses, summed over the epoch's batches...
    assert re.search(r"\[time: [0-9.]+s, train_loss1: [0-9.]+, train_loss2: ", line)
    recbole_part, named_part = line.split("terms (sum): ")
    sums = numbers(recbole_part, [f"train_loss{i + 1}" for i in range(len(names))])
    named = numbers(named_part, names)
    assert list(sums.values()) == list(named.values())  # ...then the same sums by name
    batches = n_train_batches("DiffuReasonSASRec", config)
    assert batches > 1
    means = result["history"][0]["losses"]  # the JSON history keeps the mean per batch
    assert named["rec"] == pytest.approx(means["rec"] * batches, abs=1e-4)
    assert named["diff"] == pytest.approx(means["diff"] * batches, abs=1e-4)

    flops = [m for m in lines if m.startswith("FLOPs: ")]
    assert len(flops) == 1 and float(flops[0].split(": ")[1]) > 0
    assert any(m.startswith("The running environment of this training is as follows") and "Memory" in m
               for m in lines)


def test_single_loss_model_prints_recbole_train_loss(tiny_config, caplog):
    caplog.set_level(logging.INFO)
    config = dict(tiny_config, state="INFO")
    result = run("SASRec", "tiny", config_dict=config, cmd_args=[])
    line = next(m for m in log_lines(caplog) if m.startswith("epoch 0 training"))
    assert "terms" not in line and "train_loss1" not in line
    total = numbers(line, ["train loss"])["train loss"]
    assert total == pytest.approx(result["history"][0]["losses"]["loss"] * n_train_batches("SASRec", config), abs=1e-4)


def test_flops_failure_logs_na_and_the_run_goes_on(tiny_config, caplog, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("item_id_list")

    monkeypatch.setattr(runlog, "_GET_FLOPS", broken)
    caplog.set_level(logging.INFO)
    result = run("DiffuReasonSASRec", "tiny", config_dict=dict(tiny_config, state="INFO"), cmd_args=[])
    assert "FLOPs: n/a" in log_lines(caplog) and result["test_result"]


def test_flops_line_changes_no_seeded_number(tiny_config, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    config = dict(tiny_config, state="INFO", epochs=2)
    with_flops = run("DiffuReasonSASRec", "tiny", config_dict=config, cmd_args=[])
    assert any(m.startswith("FLOPs: ") and m != "FLOPs: n/a" for m in log_lines(caplog))
    monkeypatch.setattr(quick_start.runlog, "log_flops", lambda *args, **kwargs: None)
    without = run("DiffuReasonSASRec", "tiny", config_dict=config, cmd_args=[])
    assert dict(with_flops["test_result"]) == dict(without["test_result"])
    assert [e["losses"] for e in with_flops["history"]] == [e["losses"] for e in without["history"]]


class RandomPredictor(torch.nn.Module):
    """A model whose prediction draws from every global RNG, as a stochastic model in RecBole's tracer could."""

    type = ModelType.SEQUENTIAL

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def predict(self, interaction):
        random.random()
        np.random.rand()
        return self.linear(torch.rand(1, 2))


def test_count_flops_restores_every_rng_state(tiny_config):
    config = build_config("SASRec", "tiny", config_dict=tiny_config, cmd_args=[])
    dataset = prepare_data(config)[0]
    identity = lambda ds, interaction: interaction  # noqa: E731
    logger = logging.getLogger()

    model = RandomPredictor()  # built first: its initialisation draws from the RNG too

    before = checkpoint.rng_state()
    assert runlog.count_flops(model, dataset, "cpu", logger, identity) is not None
    after = checkpoint.rng_state()
    assert torch.equal(before["torch"], after["torch"]) and torch.equal(before["numpy"][1], after["numpy"][1])
    assert before["python"] == after["python"]

    runlog._GET_FLOPS(model, dataset, "cpu", logger, identity)  # RecBole's own count, unguarded
    assert not torch.equal(after["torch"], torch.get_rng_state())  # so the guard is what keeps the streams
