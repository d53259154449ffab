"""Shared fixtures: a tiny synthetic sequential dataset written at test time, and small model settings."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

N_USERS, N_ITEMS = 80, 40


def write_tiny_inter(folder: Path, name: str = "tiny", seed: int = 7, n_users: int = N_USERS) -> Path:
    """Users walk a noisy ring over the items, so the next item is learnable; 6-14 items per user."""
    rng = random.Random(seed)
    folder = folder / name
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user in range(1, n_users + 1):
        item = rng.randrange(1, N_ITEMS + 1)
        for step in range(rng.randrange(6, 15)):
            lines.append(f"u{user}\ti{item}\t{step}")
            item = (item + (1 if rng.random() < 0.8 else rng.randrange(2, 6))) % N_ITEMS + 1
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder.parent


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    return write_tiny_inter(tmp_path_factory.mktemp("data"))


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """Run in a temporary folder: RecBole writes log/ and log_tensorboard/ to the working directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


SMALL_MODEL = {
    "hidden_size": 16,
    "n_layers": 1,
    "n_heads": 2,
    "inner_size": 32,
    "think_heads": 2,
    "diffusion_steps": 4,
    "group_size": 4,
    "reward_candidates": 4,
}


@pytest.fixture
def tiny_config(data_root, workdir) -> dict:
    """Config dict for fast runs on the tiny dataset; tests copy and extend it."""
    return {
        "data_path": str(data_root),
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": 8,
        "train_batch_size": 64,
        "eval_batch_size": 64,
        "epochs": 1,
        "stopping_step": 2,
        "metrics": ["Recall", "NDCG"],
        "topk": [5, 10],
        "valid_metric": "NDCG@10",
        "checkpoint_dir": str(workdir / "saved"),
        "show_progress": False,
        "state": "ERROR",
        "seed": 2020,
        **SMALL_MODEL,
    }
