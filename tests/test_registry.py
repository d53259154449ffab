"""Model and trainer lookup: plugin models first, RecBole's zoo as fallback."""

from __future__ import annotations

import pytest
from recbole.model.sequential_recommender import GRU4Rec, SASRec
from recbole.trainer import Trainer
from recbole.utils import ModelType

from recbole_diffureason.model.diffureason_sasrec import DiffuReasonSASRec
from recbole_diffureason.registry import UnknownModelError, get_model, get_trainer, list_models
from recbole_diffureason.trainer import DRTrainer, DRTrainerMixin


def test_plugin_and_recbole_models_resolve():
    assert get_model("DiffuReasonSASRec") is DiffuReasonSASRec
    assert get_model("SASRec") is SASRec and get_model("GRU4Rec") is GRU4Rec


def test_unknown_model_lists_what_exists_and_suggests():
    with pytest.raises(UnknownModelError) as err:
        get_model("DifuReasonSASRec")
    message = str(err.value)
    assert "Did you mean DiffuReasonSASRec" in message
    assert "Plugin models: DiffuReasonSASRec" in message and "SASRec" in message and "\n" not in message


def test_list_models_holds_both_zoos():
    models = list_models()
    assert "DiffuReasonSASRec" in models["plugin"]
    assert {"SASRec", "GRU4Rec", "BERT4Rec", "BPR"} <= set(models["recbole"])


def test_trainers_are_checkpoint_safe_for_every_model():
    assert get_trainer(ModelType.SEQUENTIAL, "DiffuReasonSASRec") is DRTrainer
    assert get_trainer(ModelType.SEQUENTIAL, "SASRec") is DRTrainer
    s3rec = get_trainer(ModelType.SEQUENTIAL, "S3Rec")
    assert issubclass(s3rec, DRTrainerMixin) and issubclass(s3rec, Trainer) and s3rec.__name__ == "DRS3RecTrainer"
