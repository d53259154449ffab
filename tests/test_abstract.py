"""The model contract (model/abstract.py): what the trainer, the config and the registry rely on."""

from __future__ import annotations

import inspect
import re

import pytest
import torch
import torch.nn.functional as F
from recbole.model.sequential_recommender import SASRec
from recbole.utils import dataset_arguments, evaluation_arguments, general_arguments, training_arguments

from recbole_diffureason import registry, trainer
from recbole_diffureason.config import properties_dir, read_yaml
from recbole_diffureason.keys import collect_config_keys
from recbole_diffureason.model.abstract import ReasoningRecommender, RecBoleModelContract, contract_of
from recbole_diffureason.quick_start import run
from tests.helpers import build, first_batch

PLUGIN_MODELS = registry.plugin_model_names()
RECBOLE_KEYS = set(general_arguments + training_arguments + evaluation_arguments + dataset_arguments)


class TinyReasoner(ReasoningRecommender):
    """The smallest model that follows the contract: defaults everywhere but the loss and the scores."""

    loss_names = ("rec",)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.item_embedding = torch.nn.Embedding(self.n_items, 8, padding_idx=0)
        self.mix = torch.nn.Linear(8, 8)
        self.dropout = torch.nn.Dropout(0.5)
        self.apply(self.init_like_sasrec)

    def forward(self, item_seq, item_seq_len):
        return self.dropout(self.mix(self.item_embedding(item_seq).mean(dim=1)))

    def calculate_loss(self, interaction):
        user = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return (F.cross_entropy(user @ self.item_embedding.weight.t(), interaction[self.POS_ITEM_ID]),)

    def full_sort_predict(self, interaction):
        return self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]) @ self.item_embedding.weight.t()


def test_the_trainer_calls_the_contract_and_never_looks_hooks_up():
    source = inspect.getsource(trainer)
    for lookup in ("getattr(self.model", "getattr(model", "hasattr(self.model", "hasattr(model", "_record("):
        assert lookup not in source, lookup


def test_recbole_models_get_the_contracts_defaults(tiny_config):
    _, model, *_ = build("SASRec", tiny_config)
    contract = contract_of(model, epochs=7)
    assert isinstance(contract, RecBoleModelContract) and contract.model is model
    assert contract.training_stages() == [("train", 7)] and contract.stage_learning_rate("train") is None
    assert contract.pop_diagnostics() == {} and contract.loss_names == ()


def test_a_model_with_only_the_defaults_trains_and_evaluates(tiny_config, monkeypatch):
    discovered = registry.plugin_models()
    monkeypatch.setattr(registry, "plugin_models", lambda: {**discovered, "TinyReasoner": TinyReasoner})
    result = run(TinyReasoner, "tiny", config_dict={**tiny_config, "epochs": 2}, cmd_args=[])
    assert [h["stage"] for h in result["history"]] == ["train", "train"]
    assert set(result["history"][0]["losses"]) == {"rec"} and result["history"][0]["diagnostics"] == {}
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0


def test_diagnostics_are_averaged_per_epoch_and_reset(tiny_config):
    _, model, *_ = build("DiffuReasonSASRec", tiny_config)
    model.record_diagnostics(a=1.0, b=4.0)
    model.record_diagnostics(a=3.0)
    assert model.pop_diagnostics() == {"a": 2.0, "b": 4.0}
    assert model.pop_diagnostics() == {}


def test_the_frozen_reference_ignores_later_updates_and_dropout(tiny_config):
    _, model, train_data, *_ = build("LARES", tiny_config)
    batch = first_batch(train_data)
    seq, length = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    init = torch.zeros(seq.size(0), seq.size(1), model.hidden_size)
    model.train()
    model.snapshot_reference()
    with model.evaluating(), torch.no_grad():
        before = model.forward(seq, length, 2, init_state=init)
    with torch.no_grad():
        model.item_embedding.weight.add_(1.0)
    frozen = model.reference_call(seq, length, 2, init_state=init)
    assert torch.equal(frozen, before) and model.training  # dropout off inside, train mode restored
    assert not frozen.requires_grad
    assert not torch.equal(model.reference_weight("item_embedding.weight"), model.item_embedding.weight)


def test_keyed_noise_follows_the_user_not_the_batch(tiny_config):
    _, model, _, valid_data, _ = build("DiffuReasonSASRec", tiny_config)
    batch = first_batch(valid_data)
    noise = model.keyed_noise(batch, 16, seed=3)
    part = batch[torch.arange(3, 7)]
    assert torch.equal(model.keyed_noise(part, 16, seed=3), noise[3:7])
    assert not torch.equal(model.keyed_noise(batch, 16, seed=3, draw=1, draws=2), noise)


def test_init_like_sasrec_is_sasrecs_own_initialisation(tiny_config):
    config, model, train_data, *_ = build("LARES", tiny_config)
    torch.manual_seed(0)
    reference = SASRec(config, train_data.dataset)
    layer, ours = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    torch.manual_seed(1)
    reference._init_weights(layer)
    torch.manual_seed(1)
    model.init_like_sasrec(ours)
    assert torch.equal(layer.weight, ours.weight) and torch.equal(ours.bias, torch.zeros(4))


# ---------------------------------------------------------------- discovery and keys
def test_models_are_discovered_from_the_model_package():
    assert {"DiffuReasonSASRec", "HSTU", "LARES", "ReaRecERL", "ReaRecPRL"} <= set(PLUGIN_MODELS)
    for base in ("ReasoningRecommender", "DiffuReason", "ReaRec", "HSTUBase"):
        assert base not in PLUGIN_MODELS  # abstract = True in their class bodies
    for name, klass in registry.plugin_models().items():
        assert klass.__module__.rsplit(".", 1)[1].replace("_", "") == name.lower()


@pytest.mark.parametrize("name", PLUGIN_MODELS)
def test_every_yaml_key_has_a_rule_and_a_comment_and_every_rule_a_default(name, data_root, workdir):
    from recbole_diffureason.config import DRConfig

    model_class = registry.get_model(name)
    rules = collect_config_keys(model_class)
    path = properties_dir() / "model" / f"{name}.yaml"
    ours = read_yaml(path)
    config = DRConfig(name, "tiny", config_dict={"data_path": str(data_root)}, cmd_args=[])
    recbole_keys = set(config.internal_config_dict) - set(ours)
    # Every key of our YAML is validated, unless it is one of RecBole's own keys.
    unchecked = [k for k in ours if k not in rules and k not in recbole_keys and k not in RECBOLE_KEYS]
    assert unchecked == [], f"{path.name}: keys without a rule in {name}.config_keys: {unchecked}"
    # Every validated key has a default in some YAML layer (ours, the backbone's, RecBole's).
    missing = [k for k in rules if k not in config.internal_config_dict]
    assert missing == [], f"{name}.config_keys without a default in any YAML: {missing}"
    # Every key line carries a one-line comment.
    for line in path.read_text(encoding="utf-8").splitlines():
        if re.match(r"^[A-Za-z_]\w*\s*:", line):
            assert "#" in line.split(":", 1)[1], f"{path.name}: no comment on '{line}'"

