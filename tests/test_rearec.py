"""ReaRecERL and ReaRecPRL: wrapper, losses and their gradients, warm-up, quirk keys, determinism, end-to-end runs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recbole_diffureason.config import DRConfig, properties_dir, read_yaml
from recbole_diffureason.keys import ConfigError
from recbole_diffureason.model.rearec import ReaRec
from recbole_diffureason.modules import autoregressive
from recbole_diffureason.modules.objectives import mean_pairwise_kl
from recbole_diffureason.quick_start import build_config, run
from recbole_diffureason.registry import get_model, get_trainer
from recbole_diffureason.trainer import DRTrainer
from tests.helpers import build, first_batch

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0, "wrapper_dropout": 0.0}


def make(model_name, tiny_config, **overrides):
    return build(model_name, tiny_config, **overrides)


def named_losses(model, batch):
    return dict(zip(model.loss_names, model.calculate_loss(batch)))


# ---------------------------------------------------------------- config and registry
def test_models_are_registered_with_the_plugin_trainer():
    for name in ("ReaRecERL", "ReaRecPRL"):
        assert get_model(name).__name__ == name and issubclass(get_model(name), ReaRec)
        assert get_trainer(None, name) is DRTrainer


@pytest.mark.parametrize("name", ["ReaRecERL", "ReaRecPRL"])
def test_yaml_defaults_are_the_official_ones(name, data_root, workdir):
    cfg = DRConfig(name, "tiny", config_dict={"data_path": str(data_root)}, cmd_args=[])
    ours = read_yaml(properties_dir() / "model" / f"{name}.yaml")
    for key, value in ours.items():
        assert cfg[key] == value, key
    assert (cfg["hidden_size"], cfg["inner_size"], cfg["reason_step"], cfg["tau"], cfg["wrapper_dropout"]) == \
        (256, 300, 2, 0.07, 0.2)
    assert cfg["train_neg_sample_args"]["distribution"] == "none"


def test_bad_values_are_refused(tiny_config):
    with pytest.raises(ConfigError, match="'reason_step' is 0"):
        build_config("ReaRecPRL", "tiny", config_dict={**tiny_config, "reason_step": 0}, cmd_args=[])
    with pytest.raises(ConfigError, match="'tau' is 0.0"):
        build_config("ReaRecERL", "tiny", config_dict={**tiny_config, "tau": 0.0}, cmd_args=[])


# ---------------------------------------------------------------- reasoning wrapper
def test_step_zero_is_recbole_sasrec_with_the_wrapper_dropout(tiny_config):
    config, model, train_data, _, _ = make("ReaRecERL", tiny_config, wrapper_dropout=0.3)
    assert model.wrapper_dropout.p == 0.3 and model.reason_pos_embedding.weight.shape == (2, 16)
    model.eval()  # without dropout, step 0 is exactly SASRec.forward (LN_w is SASRec's embedding LayerNorm)
    batch = first_batch(train_data)
    seq, length = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    with torch.no_grad():
        states = model.reason(seq, length)
        assert states.shape == (len(seq), 3, 16)
        assert torch.allclose(states[:, 0], model.backbone(seq, length), atol=1e-6)


def test_reasoning_steps_equal_a_full_reencoding(tiny_config):
    """h_1 is the encoder output at the token r_1 = h_0 + RPE[0] appended to the items (no cache)."""
    _, model, train_data, _, _ = make("ReaRecERL", tiny_config)
    model.eval()
    batch = first_batch(train_data)
    seq, length = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    net = model.backbone
    with torch.no_grad():
        states = model.reason(seq, length)
        positions = torch.arange(seq.size(1))
        items = model.step_input(net.item_embedding(seq) + net.position_embedding(positions))
        token = model.step_input(states[:, 0] + model.reason_pos_embedding.weight[0]).unsqueeze(1)
        valid = torch.cat([seq != 0, torch.ones(len(seq), 1, dtype=torch.bool)], dim=1)
        causal = torch.tril(torch.ones(valid.size(1), valid.size(1), dtype=torch.bool))
        mask = torch.where(valid[:, None, None, :] & causal, 0.0, -10000.0)
        full = net.trm_encoder(torch.cat([items, token], dim=1), mask, output_all_encoded_layers=False)[-1]
    assert torch.allclose(states[:, 1], full[:, -1], atol=1e-5)


def test_gradients_flow_across_reasoning_steps(tiny_config):
    _, model, train_data, _, _ = make("ReaRecPRL", tiny_config)
    rec, _, _ = model.calculate_loss(first_batch(train_data))
    rec.backward()  # the last step only: it must still reach step 0's encoder input and the RPE rows
    assert model.reason_pos_embedding.weight.grad[0].abs().sum() > 0
    assert model.backbone.position_embedding.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- ERL
def test_erl_losses_and_mean_representation(tiny_config):
    _, model, train_data, _, test_data = make("ReaRecERL", tiny_config)
    losses = named_losses(model, first_batch(train_data))
    assert set(losses) == {"rec", "kl"} and all(torch.isfinite(v) for v in losses.values())
    assert losses["rec"] > 0 and losses["kl"] < 0  # the divergence is maximised: minus sign
    model.eval()
    batch = first_batch(test_data)
    with torch.no_grad():
        states = model.reason(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])
        expected = states.mean(1) @ model.item_table.t() / model.tau
        scores = model.full_sort_predict(batch)
        assert torch.allclose(scores, expected, atol=1e-4)
        items = batch[model.ITEM_ID]
        assert torch.allclose(model.predict(batch), scores.gather(1, items[:, None]).squeeze(1), atol=1e-4)


def test_erl_kl_term_pushes_step_distributions_apart(tiny_config):
    _, model, train_data, _, _ = make("ReaRecERL", tiny_config, **NO_DROPOUT)
    batch = first_batch(train_data)

    def divergence():
        with torch.no_grad():
            states = model.reason(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])
            return float(mean_pairwise_kl(F.log_softmax(model.logits(states), -1)))

    before = divergence()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(3):
        optimizer.zero_grad()
        named_losses(model, batch)["kl"].backward()  # descend on -lambda * KL only
        optimizer.step()
    assert divergence() > before


def test_erl_without_kl_weight_skips_the_term(tiny_config):
    _, model, train_data, _, _ = make("ReaRecERL", tiny_config, kl_weight=0.0)
    assert named_losses(model, first_batch(train_data))["kl"] == 0


def test_erl_noise_quirk_is_off_by_default_and_follows_the_warmup(tiny_config):
    _, model, train_data, _, _ = make("ReaRecERL", tiny_config, **NO_DROPOUT)
    batch = first_batch(train_data)
    model.on_epoch_start(5)
    clean = named_losses(model, batch)["rec"]
    assert torch.equal(named_losses(model, batch)["rec"], clean)  # noise_factor 0: deterministic without dropout
    model.noise_factor = 0.5
    model.on_epoch_start(1)  # warm-up (warmup = 2): still no noise
    assert torch.equal(named_losses(model, batch)["rec"], clean)
    model.on_epoch_start(2)
    assert not torch.equal(named_losses(model, batch)["rec"], clean)


# ---------------------------------------------------------------- PRL
def test_prl_step_temperatures_anneal_towards_tau(tiny_config):
    _, model, _, _, _ = make("ReaRecPRL", tiny_config, reason_step=2, temp_scale=5.0, tau=0.07)
    assert torch.allclose(model.step_temperatures, torch.tensor([1.75, 0.35]), atol=1e-6)


def test_prl_progressive_loss_weights_last_step_one_and_mean_of_the_rest(tiny_config):
    _, model, train_data, _, _ = make("ReaRecPRL", tiny_config, reason_step=3, pl_weight=0.5, **NO_DROPOUT)
    batch = first_batch(train_data)
    target = batch[model.POS_ITEM_ID]
    losses = named_losses(model, batch)
    with torch.no_grad():
        states = model.reason(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])
        taus = [0.07 * 5.0 ** (3 - k) for k in range(3)]
        per_step = [F.cross_entropy(states[:, k] @ model.item_table.t() / taus[k], target) for k in range(3)]
        assert torch.allclose(losses["progressive"], 0.5 * torch.stack(per_step).mean(), atol=1e-5)
        assert torch.allclose(losses["rec"], F.cross_entropy(states[:, 3] @ model.item_table.t() / 0.07, target),
                              atol=1e-5)


def test_prl_contrastive_loss_is_zero_in_warmup_and_active_after(tiny_config):
    _, model, train_data, _, _ = make("ReaRecPRL", tiny_config, warmup=2)
    batch = first_batch(train_data)
    for epoch in (0, 1):
        model.on_epoch_start(epoch)
        assert named_losses(model, batch)["contrastive"] == 0
    model.on_epoch_start(2)
    contrastive = named_losses(model, batch)["contrastive"]
    assert contrastive > 0 and torch.isfinite(contrastive) and contrastive.requires_grad
    contrastive.backward()
    assert model.reason_pos_embedding.weight.grad.abs().sum() > 0
    model.eval()
    assert not model.noise_active()  # evaluation never adds noise


def test_prl_noisy_branch_is_fed_the_clean_state_plus_noise(tiny_config):
    _, model, train_data, _, _ = make("ReaRecPRL", tiny_config, **NO_DROPOUT)
    batch = first_batch(train_data)
    seq, length, size = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN], len(batch)
    model.eval()

    def noisy_reason(self_feed):
        model.noisy_self_feed = self_feed
        torch.manual_seed(0)  # the same noise draws for both feeding modes
        return model.reason(seq, length, noise=0.5, noisy_copy=True)

    with torch.no_grad():
        alone = model.reason(seq, length)
        clean_fed, self_fed = noisy_reason(False), noisy_reason(True)
    for both in (clean_fed, self_fed):
        assert torch.allclose(both[:size], alone, atol=1e-6)  # the clean half never sees the noise
        assert torch.allclose(both[size:, 0], alone[:, 0], atol=1e-6)  # same step-0 input
        assert not torch.allclose(both[size:, 1], alone[:, 1], atol=1e-3)  # noise reaches step 1
    # Step 1 is fed h_0 = h~_0 either way; step 2 is fed the clean h_1 or the branch's own h~_1.
    assert torch.allclose(clean_fed[size:, 1], self_fed[size:, 1], atol=1e-6)
    assert not torch.allclose(clean_fed[size:, 2], self_fed[size:, 2], atol=1e-4)


def test_prl_feed_back_selects_the_clean_half():
    previous = torch.arange(8.0).view(4, 2)
    clean_fed = ReaRec.feed_back(type("M", (), {"noisy_self_feed": False})(), previous, 2, True)
    assert torch.equal(clean_fed, torch.cat([previous[:2], previous[:2]]))
    self_fed = ReaRec.feed_back(type("M", (), {"noisy_self_feed": True})(), previous, 2, True)
    assert torch.equal(self_fed, previous)


def test_prl_inference_uses_the_last_state(tiny_config):
    _, model, _, _, test_data = make("ReaRecPRL", tiny_config, scale_eval_logits=False)
    model.eval()
    batch = first_batch(test_data)
    with torch.no_grad():
        states = model.reason(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])
        assert torch.allclose(model.full_sort_predict(batch), states[:, -1] @ model.item_table.t(), atol=1e-5)


# ---------------------------------------------------------------- evaluation and end-to-end
@pytest.mark.parametrize("name", ["ReaRecERL", "ReaRecPRL"])
def test_evaluation_is_deterministic_and_independent_of_batch_size(name, tiny_config):
    config, model, _, valid_data, _ = make(name, tiny_config)
    trainer = get_trainer(config["MODEL_TYPE"], name)(config, model)
    first = trainer.evaluate(valid_data, load_best_model=False)
    assert first == trainer.evaluate(valid_data, load_best_model=False)
    config2, model2, _, valid_small, _ = make(name, tiny_config, eval_batch_size=7)
    model2.load_state_dict(model.state_dict())
    trainer2 = get_trainer(config2["MODEL_TYPE"], name)(config2, model2)
    assert trainer2.evaluate(valid_small, load_best_model=False) == first


@pytest.mark.parametrize("name,terms", [("ReaRecERL", {"rec", "kl"}),
                                        ("ReaRecPRL", {"rec", "progressive", "contrastive"})])
def test_one_epoch_run_end_to_end(name, terms, tiny_config):
    result = run(name, "tiny", config_dict={**tiny_config, "warmup": 0}, cmd_args=[])
    assert set(result["history"][0]["losses"]) == terms
    assert all(v == v for v in result["history"][0]["losses"].values())  # finite, not NaN
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0
    state = torch.load(result["saved_model_file"], weights_only=True)
    assert state["model_class"] == name and "reason_pos_embedding.weight" in state["state_dict"]
    if name == "ReaRecPRL":
        assert result["history"][0]["losses"]["contrastive"] > 0  # warmup 0: contrast from the first epoch


def test_kv_cache_module_is_what_the_model_uses(tiny_config, monkeypatch):
    _, model, train_data, _, _ = make("ReaRecERL", tiny_config, reason_step=3)
    calls = []
    original = autoregressive.step
    monkeypatch.setattr(autoregressive, "step", lambda *a: calls.append(1) or original(*a))
    model.calculate_loss(first_batch(train_data))
    assert len(calls) == 3  # one single-token pass per reasoning step
