"""Serving a trained checkpoint: top-k for a user or a raw history, with clear errors for unknown ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recbole_diffureason.cli import main
from recbole_diffureason.quick_start import run
from recbole_diffureason.serving import Recommender, UnknownIdError


@pytest.fixture
def trained(tiny_config):
    def train(model):
        return run(model, "tiny", config_dict=dict(tiny_config, saved_model_file=f"saved/{model}.pth"),
                   cmd_args=[])["saved_model_file"]
    return train


def test_top_k_for_a_user_and_for_the_same_history(trained):
    rec = Recommender(trained("SASRec"))
    top = rec.for_user("u1", k=5)
    assert len(top) == 5 and all(item.startswith("i") for item, _ in top)  # real items, no [PAD]
    scores = [s for _, s in top]
    assert scores == sorted(scores, reverse=True)
    history = rec.history_of("u1")
    assert 1 <= len(history) <= rec.max_length
    assert rec.for_history(history, k=5) == top


def test_exclude_seen_and_determinism_for_diffureason(trained):
    rec = Recommender(trained("DiffuReasonSASRec"))
    assert rec.for_user("u3", k=10) == rec.for_user("u3", k=10)
    seen = set(rec.history_of("u3"))
    assert not seen & {item for item, _ in rec.for_user("u3", k=30, exclude_seen=True)}
    assert len(rec.for_history(["i1", "i2"], k=100)) == 40  # capped at the catalogue


def test_unknown_ids_are_reported(trained):
    rec = Recommender(trained("SASRec"))
    with pytest.raises(UnknownIdError, match="Unknown user id 'nobody'"):
        rec.for_user("nobody")
    with pytest.raises(UnknownIdError, match="Unknown item id 'i999'"):
        rec.for_history(["i1", "i999"])
    with pytest.raises(ValueError, match="empty"):
        rec.for_history([])
    with pytest.raises(ValueError, match="k must be"):
        rec.for_user("u1", k=0)


def test_recommend_command(trained, capsys, data_root):
    model_file = trained("DiffuReasonSASRec")
    assert main(["recommend", f"--model_file={model_file}", "--user=u2", f"--data_path={data_root}"]) == 0
    capsys.readouterr()
    assert main(["recommend", f"--model_file={model_file}", "--user=u2", "--k=3"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert len(items) == 3 and set(items[0]) == {"item", "score"}
    assert main(["recommend", f"--model_file={model_file}", "--history=i1,i2 i3", "--k=2"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert main(["recommend", f"--model_file={model_file}", "--user=ghost"]) == 2
    assert capsys.readouterr().err.startswith("error: Unknown user id 'ghost'")
    assert main(["recommend", "--model_file=missing.pth", "--user=u1"]) == 2
    assert "does not exist" in capsys.readouterr().err


# ---------------------------------------------------------------------- checkpoints and their data (issue 11, item 3)
def own_dataset(root, seed=7, extra_items=0):
    """A private copy of the tiny dataset (the shared ``data_root`` must never change), optionally with a
    user holding ``extra_items`` items the original does not have."""
    from tests.conftest import write_tiny_inter

    write_tiny_inter(root, "shop", seed=seed)
    if extra_items:
        with open(root / "shop" / "shop.inter", "a", encoding="utf-8") as f:
            f.writelines(f"new_user\tnew_item{i}\t{i}\n" for i in range(extra_items))
    return root


@pytest.mark.parametrize("change", ["same_catalogue", "bigger_catalogue"])
def test_a_checkpoint_refuses_data_it_was_not_trained_on(tiny_config, tmp_path, capsys, change):
    """The reviewer's reproduction: after re-converting, recommend mapped raw ids to other items (same
    catalogue size) or died with a size mismatch (bigger one)."""
    from recbole_diffureason.checkpoint import CheckpointError
    from recbole_diffureason.quick_start import load_data_and_model

    root = own_dataset(tmp_path / "data")
    config = dict(tiny_config, data_path=str(root), saved_model_file="saved/shop.pth")
    model_file = run("SASRec", "shop", config_dict=config, cmd_args=[])["saved_model_file"]
    assert Recommender(model_file).for_user("u1", k=3)  # the data it was trained on: fine

    own_dataset(root, seed=8) if change == "same_catalogue" else own_dataset(root, extra_items=3)
    logs_before = sorted(Path("log").rglob("*.log"))
    with pytest.raises(CheckpointError, match="trained on other data .*shop.inter changed"):
        Recommender(model_file)
    assert sorted(Path("log").rglob("*.log")) == logs_before  # refused before a log file was written
    with pytest.raises(CheckpointError, match="trained on other data"):
        load_data_and_model(model_file)
    assert main(["recommend", f"--model_file={model_file}", "--user=u1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: Checkpoint '{model_file}' was trained on other data") and "\n" not in err


def test_broken_and_foreign_checkpoints_are_one_clear_error_each(trained, tmp_path, capsys):
    import torch

    from recbole_diffureason import checkpoint

    good = trained("SASRec")
    data = Path(good).read_bytes()
    cases = {
        "empty.pth": (b"", "is empty \\(0 bytes\\)"),
        "truncated.pth": (data[: len(data) // 2], "is truncated or corrupt"),
        "text.pth": (b"not a checkpoint at all\n", "is not a torch checkpoint \\(it starts with b.not "),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(checkpoint.CheckpointError, match=message):
            checkpoint.load(tmp_path / name)
    torch.save({"weight": torch.zeros(3)}, tmp_path / "foreign.pth")  # a plain state_dict
    with pytest.raises(checkpoint.CheckpointError, match="not a recbole-diffureason checkpoint: it holds a dict with keys \\['weight'\\]"):
        checkpoint.load(tmp_path / "foreign.pth")
    state = torch.load(good, weights_only=True)
    torch.save({**state, "format_version": 99}, tmp_path / "future.pth")
    with pytest.raises(checkpoint.CheckpointError, match="newer than this"):
        checkpoint.load(tmp_path / "future.pth")
    with pytest.raises(checkpoint.CheckpointError, match="cannot resume a run"):
        checkpoint.load(good, resume=True)  # a best-weights file holds no RNG state
    for name in ("empty.pth", "truncated.pth", "text.pth", "foreign.pth"):
        assert main(["recommend", f"--model_file={tmp_path / name}", "--user=u1"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
