"""Distributed data-parallel training on CPU (gloo), which RecBole 1.2.1 itself cannot do."""

from __future__ import annotations

import json
import socket

import torch

from recbole_diffureason.quick_start import load_data_and_model, run
from recbole_diffureason.registry import get_trainer
from recbole_diffureason.trainer import first_occurrences
from tests.conftest import write_tiny_inter


def free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return str(sock.getsockname()[1])


def test_first_occurrences_keeps_order():
    assert first_occurrences(torch.tensor([5, 3, 5, 7, 3, 9])).tolist() == [0, 1, 3, 5]


def test_recbole_directory_creation_survives_a_concurrent_rank(tmp_path, monkeypatch):
    # Two ranks starting together: both see ./log missing, the other one creates it first.
    import recbole.data.utils
    import recbole.trainer.trainer
    import recbole.utils.logger

    existing = tmp_path / "log"
    existing.mkdir()
    (existing / "kept.txt").write_text("written by the other rank", encoding="utf-8")
    monkeypatch.setattr("os.path.exists", lambda path: False)  # the window between RecBole's check and mkdir
    for index, module in enumerate((recbole.utils.logger, recbole.trainer.trainer, recbole.data.utils)):
        module.ensure_dir(str(existing))  # RecBole's own version raises FileExistsError here
        fresh = tmp_path / f"new{index}" / "nested"
        module.ensure_dir(str(fresh))
        assert fresh.is_dir()
    assert (existing / "kept.txt").read_text(encoding="utf-8") == "written by the other rank"


def test_two_cpu_processes_train_and_match_a_single_process_evaluation(tiny_config, workdir):
    # 81 users: the DistributedSampler pads one rank with a repeated user, which must not count twice.
    data_root = write_tiny_inter(workdir / "data", name="odd", n_users=81)
    config = dict(tiny_config, data_path=str(data_root), epochs=2, eval_batch_size=24,
                  saved_model_file=str(workdir / "saved" / "ddp.pth"), denoiser_output="residual")
    result = run("DiffuReasonSASRec", "odd", config_dict=config, cmd_args=[], nproc=2, port=free_port())
    assert result is not None  # both stages of the defaults (backbone_first) ran under DDP, 2 epochs each
    assert [h["stage"] for h in result["history"]] == ["backbone", "backbone", "train", "train"]
    assert result["history"][-1]["losses"]["rec"] > 0
    saved_config = json.loads(open(result["results_file"], encoding="utf-8").read())["config"]
    assert saved_config["world_size"] == 2 and saved_config["single_spec"] is False

    cfg, model, _, _, valid_data, test_data = load_data_and_model(result["saved_model_file"])
    assert cfg["single_spec"] is True
    trainer = get_trainer(cfg["MODEL_TYPE"], cfg["model"])(cfg, model)
    assert dict(trainer.evaluate(test_data, load_best_model=False)) == dict(result["test_result"])
    assert dict(trainer.evaluate(valid_data, load_best_model=False)) == dict(result["best_valid_result"])
