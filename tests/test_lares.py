"""LARES: recurrence, SPT alignment, RPT (GRPO) and data selection, ablations, determinism, stages and checkpoints."""

from __future__ import annotations

import pytest
import torch

from recbole_diffureason.config import DRConfig, properties_dir, read_yaml
from recbole_diffureason.keys import ConfigError
from recbole_diffureason.model.lares import LARES
from recbole_diffureason.quick_start import build_config, run
from recbole_diffureason.registry import get_model, get_trainer
from recbole_diffureason.trainer import LARESTrainer
from tests.helpers import build, first_batch

SMALL = {"pre_layers": 1, "core_layers": 1, "mean_depth": 2, "rpt_filter_topk": 10}
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0}


@pytest.fixture
def lares_config(tiny_config):
    return {**tiny_config, **SMALL}


def make(config_dict, **overrides):
    return build("LARES", config_dict, **overrides)


def named(model, losses):
    return dict(zip(model.loss_names, losses))


def record_depths(model, monkeypatch):
    """Wrap ``model.forward`` to log the depth of every pass."""
    depths, original = [], model.forward
    monkeypatch.setattr(model, "forward", lambda seq, length, depth, **kw: depths.append(depth) or original(
        seq, length, depth, **kw))
    return depths


# ---------------------------------------------------------------- config and registry
def test_registry_yaml_defaults_and_trainer(data_root, workdir):
    assert get_model("LARES") is LARES and get_trainer(None, "LARES") is LARESTrainer
    cfg = DRConfig("LARES", "tiny", config_dict={"data_path": str(data_root)}, cmd_args=[])
    for key, value in read_yaml(properties_dir() / "model" / "LARES.yaml").items():
        assert cfg[key] == value, key
    assert (cfg["hidden_size"], cfg["inner_size"], cfg["init_std"], cfg["depth_sigma"], cfg["group_size"]) == \
        (64, 256, 1.0, 0.5, 4)


def test_config_checks(lares_config):
    with pytest.raises(ConfigError, match="pre_model_path"):
        build_config("LARES", "tiny", config_dict={**lares_config, "train_stage": "rpt"}, cmd_args=[])
    with pytest.raises(ConfigError, match="'rpt_filter' is 'some'"):
        build_config("LARES", "tiny", config_dict={**lares_config, "rpt_filter": "some"}, cmd_args=[])
    with pytest.raises(ConfigError, match="ablation 'wo_rpt_sla' sets 'sla_weight'"):
        build_config("LARES", "tiny", config_dict={**lares_config, "ablation": "wo_rpt_sla", "sla_weight": 0.5},
                     cmd_args=[])


# ---------------------------------------------------------------- recurrence and prediction
def test_shapes_and_prediction(lares_config):
    config, model, train_data, _, test_data = make(lares_config)
    batch = first_batch(train_data)
    thoughts = model(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN], depth=4)
    assert thoughts.shape == (len(batch), 4, 16)
    model.eval()
    eval_batch = first_batch(test_data)
    with torch.no_grad():
        scores = model.full_sort_predict(eval_batch)
        assert scores.shape == (len(eval_batch), model.n_items)
        items = eval_batch[model.ITEM_ID]
        assert torch.allclose(model.predict(eval_batch), scores.gather(1, items[:, None]).squeeze(1), atol=1e-5)


def test_inference_depth_is_kbar_plus_one_and_sampling_can_be_fixed(lares_config, monkeypatch):
    _, model, train_data, _, test_data = make(lares_config, mean_depth=3)
    assert model.eval_depth == 4
    model.eval()
    depths = record_depths(model, monkeypatch)
    with torch.no_grad():
        model.full_sort_predict(first_batch(test_data))
    assert depths == [4]
    torch.manual_seed(0)
    sampled = {model.train_depth() for _ in range(200)}
    assert len(sampled) > 3 and max(sampled) <= 9 and min(sampled) >= 1
    _, fixed, _, _, _ = make(lares_config, mean_depth=3, depth_sampling=False, eval_depth=2)
    assert {fixed.train_depth() for _ in range(20)} == {2}


def test_initial_state_options(lares_config):
    _, model, _, _, _ = make(lares_config, init_distribution="trunc_normal", state_scale=3.0)
    state = model.random_state((500, 8, 16))
    assert state.abs().max() <= 9.0 + 1e-5 and state.std() > 2.0
    _, plain, _, _, _ = make(lares_config)
    assert plain.random_state((500, 8, 16)).std() == pytest.approx(1.0, abs=0.05)


# ---------------------------------------------------------------- SPT
def test_spt_losses_present_finite_and_differentiable(lares_config):
    _, model, train_data, _, _ = make(lares_config, mean_depth=3, depth_sampling=False)
    losses = named(model, model.calculate_loss(first_batch(train_data)))
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["rec"] > 0 and losses["tla"] > 0 and losses["sla"] > 0
    assert losses["policy"] == 0 and losses["kl"] == 0
    for term in ("tla", "sla"):
        model.zero_grad()
        losses = named(model, model.calculate_loss(first_batch(train_data)))
        losses[term].backward()
        grad = model.encoder.core_block.layers.layer[0].multi_head_attention.query.weight.grad
        assert grad is not None and grad.abs().sum() > 0, term


def test_both_tla_views_use_the_same_sampled_depth(lares_config, monkeypatch):
    _, model, train_data, _, _ = make(lares_config)
    depths = record_depths(model, monkeypatch)
    torch.manual_seed(3)
    for _ in range(4):
        model.calculate_loss(first_batch(train_data))
    assert len(depths) == 8 and all(depths[i] == depths[i + 1] for i in range(0, 8, 2))


def test_sla_is_skipped_at_depth_one(lares_config):
    _, model, train_data, _, _ = make(lares_config, depth_sampling=False, eval_depth=1)
    assert named(model, model.calculate_loss(first_batch(train_data)))["sla"] == 0


def test_positive_view_prefers_another_sequence_with_the_same_target(lares_config):
    _, model, train_data, _, _ = make(lares_config)
    batch = first_batch(train_data)
    seq, length, target = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN], batch[model.POS_ITEM_ID]
    torch.manual_seed(0)
    pos_seq, pos_len = model.positive_view(seq, length, target)
    counts = model.target_counts[target]
    same_history = (pos_seq == seq).all(dim=-1) & (pos_len == length)
    # rows holding exactly this history (another user may share it): the anchor itself when there is one
    copies = torch.stack([((model.train_item_seq == s).all(-1) & (model.train_item_len == n)).sum()
                          for s, n in zip(seq, length)])
    unique_with_others = (counts > 1) & (copies == 1)
    assert unique_with_others.any() and not same_history[unique_with_others].any()
    assert same_history[counts == 1].all()
    # every positive is a training row whose target is the anchor's target
    train_targets = train_data.dataset.inter_feat[model.ITEM_ID]
    assert all(((model.train_item_seq == s).all(-1) & (model.train_item_len == n) & (train_targets == t)).any()
               for s, n, t in zip(pos_seq, pos_len, target))
    _, dropout_only, _, _, _ = make(lares_config, same_target_positive=False)
    assert dropout_only.positive_view(seq, length, target)[0] is seq


# ---------------------------------------------------------------- ablations (Table 2)
def test_ablation_rows_change_what_they_name(lares_config, monkeypatch):
    without_pre = {k: v for k, v in lares_config.items() if k != "pre_layers"}
    _, pre, train_data, _, _ = make(without_pre, ablation="wo_rpt_pre_block")
    assert pre.encoder.pre_block is None and pre.training_stages() == [("spt", 1)]
    _, base, _, _, _ = make(lares_config, ablation="wo_rpt")
    assert base.encoder.pre_block is not None and base.training_stages() == [("spt", 1)]
    _, fixed, _, _, _ = make(lares_config, ablation="wo_rpt_sampling")
    assert not fixed.depth_sampling and fixed.train_depth() == fixed.eval_depth
    _, no_sla, _, _, _ = make(lares_config, ablation="wo_rpt_sla")
    losses = named(no_sla, no_sla.calculate_loss(first_batch(train_data)))
    assert losses["sla"] == 0 and losses["tla"] > 0
    _, neither, _, _, _ = make(lares_config, ablation="wo_rpt_sla_tla")
    depths = record_depths(neither, monkeypatch)
    losses = named(neither, neither.calculate_loss(first_batch(train_data)))
    assert losses["sla"] == 0 and losses["tla"] == 0 and len(depths) == 1  # no positive-view pass


@pytest.mark.parametrize("options", [{"layer_type": "pre_ln"}, {"aggregation": "concat"},
                                     {"cl_similarity": "cos", "cl_temperature": 0.07, "mask_false_negatives": True}])
def test_architecture_and_loss_options_train(lares_config, options):
    _, model, train_data, _, _ = make(lares_config, **options)
    sum(model.calculate_loss(first_batch(train_data))).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ---------------------------------------------------------------- RPT (GRPO)
def synthetic_group(rewards):
    log_probs = [torch.randn(3, depth, requires_grad=True) for depth in (2, 3)]
    return log_probs, [lp.detach() for lp in log_probs], torch.tensor(rewards), [2, 3]


def test_grpo_gradient_follows_the_advantage_and_vanishes_for_equal_rewards(lares_config):
    _, model, _, _, _ = make(lares_config, kl_beta=0.0)
    torch.manual_seed(0)
    log_probs, refs, rewards, depths = synthetic_group([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    policy, kl, stats = model.group_policy_loss(log_probs, refs, rewards, depths)
    policy.backward()
    first, second = log_probs[0].grad, log_probs[1].grad
    # row 0: rollout 1 hit (A > 0) -> its target log-probs are pushed up (negative loss gradient)
    assert (first[0] < 0).all() and (second[0] > 0).all()
    assert (first[1] > 0).all() and (second[1] < 0).all()
    assert torch.equal(first[2], torch.zeros(2)) and torch.equal(second[2], torch.zeros(3))  # equal rewards: A = 0
    # per-step mean: each rollout's steps share 1/k_i
    assert torch.allclose(first[0], first[0][0].expand(2)) and torch.allclose(first[0][0] * 2, -second[0][0] * 3)
    assert stats["frac_groups_with_signal"] == pytest.approx(2 / 3) and kl == 0


def test_grpo_sum_reduction_is_the_papers_product(lares_config):
    _, model, _, _, _ = make(lares_config, kl_beta=0.0, policy_step_reduction="sum")
    log_probs, refs, rewards, depths = synthetic_group([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    model.group_policy_loss(log_probs, refs, rewards, depths)[0].backward()
    assert torch.allclose(log_probs[0].grad[0], -log_probs[1].grad[0][:2])


def test_rpt_loss_reaches_the_model_and_kl_uses_the_same_initial_state(lares_config):
    config, model, train_data, _, _ = make(lares_config, **NO_DROPOUT, reward_k=5)
    model.set_training_stage("rpt")
    batch = first_batch(train_data)
    losses = named(model, model.calculate_loss(batch))
    assert losses["rec"] == 0 and losses["tla"] == 0 and torch.isfinite(losses["policy"])
    # Right after the snapshot and without dropout, pi_theta = pi_ref on the same T_0 and depth: KL = 0.
    assert losses["kl"].abs() < 1e-6
    diagnostics = model.pop_diagnostics()
    assert 0 < diagnostics["frac_groups_with_signal"] <= 1
    losses["policy"].backward()
    assert model.encoder.core_block.layers.layer[0].feed_forward.dense_1.weight.grad.abs().sum() > 0
    torch.optim.SGD(model.parameters(), lr=0.5).step()
    assert named(model, model.calculate_loss(batch))["kl"] > 0


def test_rpt_reference_is_frozen_and_outside_the_optimiser(lares_config):
    _, model, _, _, _ = make(lares_config)
    n_parameters = len(list(model.parameters()))
    model.set_training_stage("rpt")
    reference = model.reference_weight("item_embedding.weight")
    assert model.has_reference and not reference.requires_grad
    assert len(list(model.parameters())) == n_parameters  # the optimiser never sees pi_ref
    with torch.no_grad():
        model.item_embedding.weight.add_(1.0)
    model.set_training_stage("rpt", resumed=True)  # re-entering (a resumed run) keeps the same reference
    assert model.reference_weight("item_embedding.weight") is reference
    assert "_reference" in model.other_parameter()


def test_data_selection_rules(lares_config):
    _, model, train_data, _, _ = make(lares_config, rpt_filter_topk=3)
    model.set_training_stage("rpt")
    feat = train_data.dataset.inter_feat
    seq, length, target = feat[model.ITEM_SEQ], feat[model.ITEM_SEQ_LEN], feat[model.ITEM_ID]

    def mask(rule, topk=3):
        model.rpt_filter, model.rpt_filter_topk = rule, topk
        return model.rpt_sample_mask(seq, length, target, torch.Generator().manual_seed(0))

    keep_all, keep_any = mask("all"), mask("any")
    assert 0 < keep_any.sum() < keep_all.sum() < len(target)  # "any" drops more than "all"
    assert not (keep_any & ~keep_all).any()
    assert mask("none").all() and mask("all", topk=model.n_items).all()
    assert torch.equal(mask("all"), keep_all)  # the dedicated generator makes it reproducible


def test_rpt_trains_on_the_selected_rows_with_the_shared_shuffling_state(lares_config):
    config, model, train_data, _, _ = make(lares_config, rpt_filter_topk=3)
    trainer = LARESTrainer(config, model)
    trainer._enter_stage(1, fresh=True, saved=False)  # SPT -> RPT without a checkpoint to reload
    assert trainer._stage_name() == "rpt" and model.has_reference
    states = [train_data.generator.get_state()]
    for epoch in range(2):
        trainer._train_epoch(train_data, epoch)
        states.append(train_data.generator.get_state())
    selected = trainer._rpt_train_data
    kept = len(selected.dataset.inter_feat)
    assert 0 < kept < len(train_data.dataset.inter_feat) and selected.step == config["train_batch_size"]
    assert model.pop_diagnostics() == {} and trainer.history[0]["diagnostics"]["rpt_kept_share"] == pytest.approx(
        kept / len(train_data.dataset.inter_feat))
    # Each RPT epoch advances the one shuffling state that resume checkpoints save.
    assert not torch.equal(states[0], states[1]) and not torch.equal(states[1], states[2])
    assert torch.equal(selected.generator.get_state(), states[2])


# ---------------------------------------------------------------- evaluation
def test_evaluation_is_deterministic_and_independent_of_batch_size(lares_config):
    config, model, _, valid_data, _ = make(lares_config)
    trainer = get_trainer(config["MODEL_TYPE"], "LARES")(config, model)
    first = trainer.evaluate(valid_data, load_best_model=False)
    assert first == trainer.evaluate(valid_data, load_best_model=False)
    config2, model2, _, valid_small, _ = make(lares_config, eval_batch_size=7)
    model2.load_state_dict(model.state_dict())
    trainer2 = get_trainer(config2["MODEL_TYPE"], "LARES")(config2, model2)
    assert trainer2.evaluate(valid_small, load_best_model=False) == first


def test_seeded_and_zero_initial_states_differ(lares_config):
    _, model, _, _, test_data = make(lares_config)
    model.eval()
    batch = first_batch(test_data)
    with torch.no_grad():
        seeded = model.full_sort_predict(batch)
        model.eval_init = "zero"
        zero = model.full_sort_predict(batch)
        model.eval_init, model.eval_noise_seed = "seeded", 7
        other = model.full_sort_predict(batch)
    assert not torch.allclose(seeded, zero) and not torch.allclose(seeded, other)


# ---------------------------------------------------------------- stages, checkpoints, resume
def test_one_run_trains_spt_then_rpt(lares_config):
    result = run("LARES", "tiny", config_dict=lares_config, cmd_args=[])
    assert [h["stage"] for h in result["history"]] == ["spt", "rpt"]
    spt, rpt = result["history"]
    assert spt["losses"]["rec"] > 0 and spt["losses"]["policy"] == 0
    assert rpt["losses"]["rec"] == 0 and rpt["losses"]["kl"] >= 0
    assert 0 < rpt["diagnostics"]["rpt_kept_share"] <= 1 and "frac_groups_with_signal" in rpt["diagnostics"]
    state = torch.load(result["saved_model_file"], weights_only=True)
    assert state["model_class"] == "LARES" and "item_embedding.weight" in state["other_parameter"]["_reference"]
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0


def test_rpt_only_run_starts_from_an_spt_checkpoint(lares_config):
    spt = run("LARES", "tiny", config_dict={**lares_config, "train_stage": "spt", "saved_model_file": "saved/spt.pth"},
              cmd_args=[])
    assert [h["stage"] for h in spt["history"]] == ["spt"]
    spt_state = torch.load(spt["saved_model_file"], weights_only=True)["state_dict"]
    rpt_config = {**lares_config, "train_stage": "rpt", "pre_model_path": spt["saved_model_file"],
                  "saved_model_file": "saved/rpt.pth"}
    _, model, _, _, _ = make(rpt_config)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in spt_state.items())
    rpt = run("LARES", "tiny", config_dict=rpt_config, cmd_args=[])
    assert [h["stage"] for h in rpt["history"]] == ["rpt"]
    reference = torch.load(rpt["saved_model_file"], weights_only=True)["other_parameter"]["_reference"]
    assert all(torch.equal(reference[k], v) for k, v in spt_state.items())  # pi_ref is the SPT model


def test_rpt_with_data_selection_resumes_exactly(lares_config):
    straight = run("LARES", "tiny", cmd_args=[], config_dict={
        **lares_config, "rpt_epochs": 2, "saved_model_file": "saved/straight.pth"})
    first = {**lares_config, "rpt_epochs": 1, "saved_model_file": "saved/resumed.pth", "resume": True}
    run("LARES", "tiny", config_dict=first, cmd_args=[])
    resumed = run("LARES", "tiny", config_dict={**first, "rpt_epochs": 2}, cmd_args=[])
    assert [h["stage"] for h in resumed["history"]] == ["spt", "rpt", "rpt"]
    assert resumed["history"][2]["losses"] == pytest.approx(straight["history"][2]["losses"], rel=1e-5, abs=1e-7)
    assert resumed["test_result"] == straight["test_result"]
