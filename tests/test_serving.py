"""Serving a trained checkpoint: top-k for a user or a raw history, with clear errors for unknown ids."""

from __future__ import annotations

import json

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
