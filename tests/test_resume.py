"""``resume=True`` without a checkpoint name, a real SIGKILL mid-epoch, and resumes that must be refused."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from recbole_diffureason import checkpoint
from recbole_diffureason.cli import main
from recbole_diffureason.quick_start import build_config, build_model, prepare_data, run
from recbole_diffureason.registry import get_trainer

ROOT = Path(__file__).resolve().parent.parent

# The child trains, and in epoch 2, after one batch has updated the weights, writes the marker and waits to be
# killed. Nothing is mocked: the parent sends SIGKILL, so the process dies mid-epoch with no chance to save.
CHILD = """
import json, sys, time
from pathlib import Path
import torch
import yaml
torch.set_num_threads(1)
from recbole_diffureason.quick_start import run
from recbole_diffureason.trainer import DRTrainerMixin

config, marker = json.loads(sys.argv[1]), Path(sys.argv[2])
train_epoch = DRTrainerMixin._train_epoch

def train_epoch_then_hang(self, train_data, epoch_idx, *args, **kwargs):
    if epoch_idx == 2:
        compute, batches = self.model.calculate_loss, []
        def loss(interaction):
            batches.append(1)
            if len(batches) == 2:
                marker.write_text("epoch 2, batch 1 trained")
                time.sleep(600)
            return compute(interaction)
        self.model.calculate_loss = loss
    return train_epoch(self, train_data, epoch_idx, *args, **kwargs)

DRTrainerMixin._train_epoch = train_epoch_then_hang
run("DiffuReasonSASRec", "tiny", config_dict=config, cmd_args=[])
"""


def last_files(folder: Path):
    return sorted(folder.glob("*-last.pth"))


def test_a_run_killed_mid_epoch_resumes_to_the_metrics_of_an_uninterrupted_run(tiny_config, workdir):
    config = dict(tiny_config, epochs=4, stopping_step=10)
    marker = workdir / "epoch2.started"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    with open(workdir / "child.err", "w") as err:  # a file, not a pipe: a full pipe would block the child
        child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(config), str(marker)], cwd=workdir,
                                 env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.time() + 300
        while not marker.exists() and child.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert marker.exists(), (workdir / "child.err").read_text()[-2000:]
        assert len(last_files(workdir / "saved")) == 1
        child.send_signal(signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    killed_last = last_files(workdir / "saved")[0]
    killed_state = torch.load(killed_last, weights_only=True)
    assert killed_state["epoch"] == 1  # epochs 0 and 1 were validated; epoch 2 died in its second batch

    # No checkpoint name: resume=True finds the killed run (its name holds its start time) and continues it.
    resumed = run("DiffuReasonSASRec", "tiny", config_dict=dict(config, resume=True), cmd_args=[])
    straight = run("DiffuReasonSASRec", "tiny", config_dict=dict(config, checkpoint_dir=str(workdir / "straight")),
                   cmd_args=[])

    assert resumed["saved_model_file"] == checkpoint.best_checkpoint_path(killed_last)
    # Killed in the defaults' first stage (backbone_first), whose optimizer holds only the backbone's parameters.
    assert [(h["stage"], h["epoch"]) for h in resumed["history"]] == [("backbone", e) for e in range(4)] + [
        ("train", e) for e in range(4)]
    # Epochs 0 and 1 come from the killed process (their recorded times), epochs 2 and 3 were trained again.
    assert [h["train_seconds"] for h in resumed["history"][:2]] == [h["train_seconds"] for h in killed_state["history"]]
    for again, reference in zip(resumed["history"], straight["history"]):
        assert again["valid_result"] == reference["valid_result"]
        assert again["losses"] == pytest.approx(reference["losses"], rel=1e-5, abs=1e-7)
    assert resumed["best_valid_result"] == straight["best_valid_result"]
    assert resumed["test_result"] == straight["test_result"]


def test_resume_without_a_name_takes_the_newest_run_of_the_same_config(tiny_config, workdir, caplog):
    base = dict(tiny_config, epochs=1)
    older = run("SASRec", "tiny", config_dict=dict(base, saved_model_file="saved/older.pth"), cmd_args=[])
    newer = run("SASRec", "tiny", config_dict=dict(base, saved_model_file="saved/newer.pth"), cmd_args=[])
    other = run("SASRec", "tiny", config_dict=dict(base, learning_rate=0.01, saved_model_file="saved/other.pth"),
                cmd_args=[])
    now = time.time()
    os.utime(workdir / "saved" / "older-last.pth", (now - 60, now - 60))
    os.utime(workdir / "saved" / "newer-last.pth", (now - 30, now - 30))
    os.utime(workdir / "saved" / "other-last.pth", (now, now))  # newest, but another learning rate

    with caplog.at_level(logging.INFO):
        resumed = run("SASRec", "tiny", config_dict=dict(base, epochs=2, resume=True), cmd_args=[])
    assert Path(resumed["saved_model_file"]) == workdir / newer["saved_model_file"]
    assert resumed["history"][0]["train_seconds"] == newer["history"][0]["train_seconds"]
    assert "the latest matching run is" in caplog.text and "newer-last.pth" in caplog.text
    assert older["saved_model_file"] != newer["saved_model_file"] != other["saved_model_file"]


def test_resume_with_nothing_to_resume_says_so(tiny_config, workdir, caplog):
    run("SASRec", "tiny", config_dict=dict(tiny_config, saved_model_file="saved/a.pth"), cmd_args=[])
    (workdir / "saved" / "junk-last.pth").write_bytes(b"")  # e.g. a disk that filled up: passed over, named
    with caplog.at_level(logging.WARNING):
        fresh = run("SASRec", "tiny", config_dict=dict(tiny_config, resume=True, learning_rate=0.01), cmd_args=[])
    assert fresh["saved_model_file"] != str(workdir / "saved" / "a.pth")
    assert "resume=True: no '*-last.pth'" in caplog.text and "training starts from epoch 0" in caplog.text
    assert "a-last.pth: other configuration (learning_rate: 0.001 -> 0.01)" in caplog.text
    assert "junk-last.pth: unreadable (Checkpoint 'junk-last.pth' is empty (0 bytes)" in caplog.text


def test_resuming_a_named_run_with_another_config_or_data_is_refused(tiny_config, workdir, tmp_path, capsys):
    from tests.test_serving import own_dataset

    root = own_dataset(tmp_path / "data")
    config = dict(tiny_config, data_path=str(root), saved_model_file=str(workdir / "saved" / "named.pth"))
    run("SASRec", "shop", config_dict=config, cmd_args=[])
    files = {p: p.read_bytes() for p in (workdir / "saved").glob("named*.pth")}
    assert len(files) == 2

    with pytest.raises(checkpoint.CheckpointError, match="another configuration \\(hidden_size: 16 -> 32"):
        run("SASRec", "shop", config_dict=dict(config, resume=True, hidden_size=32), cmd_args=[])
    cmd = [f"--{k}={json.dumps(v) if isinstance(v, (dict, list)) else v}" for k, v in config.items()]
    assert main(["--model=SASRec", "--dataset=shop", *cmd, "--resume=True", "--learning_rate=0.01"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Cannot resume from") and "learning_rate: 0.001 -> 0.01" in err and "\n" not in err

    own_dataset(root, seed=8)  # re-converted data, same catalogue size
    with pytest.raises(checkpoint.CheckpointError, match="trained on other data .*shop.inter changed"):
        run("SASRec", "shop", config_dict=dict(config, resume=True), cmd_args=[])
    assert {p: p.read_bytes() for p in (workdir / "saved").glob("named*.pth")} == files  # nothing overwritten


def test_resume_checkpoint_refuses_another_model_and_other_data(tiny_config, workdir, tmp_path):
    from tests.test_serving import own_dataset

    root = own_dataset(tmp_path / "data")
    config = dict(tiny_config, data_path=str(root))
    gru = run("GRU4Rec", "shop", config_dict=config, cmd_args=[])["saved_model_file"]
    sasrec = run("SASRec", "shop", config_dict=config, cmd_args=[])["saved_model_file"]

    cfg = build_config("SASRec", "shop", config_dict=config, cmd_args=[])
    _, train_data, valid_data, _ = prepare_data(cfg)
    trainer = get_trainer(cfg["MODEL_TYPE"], "SASRec")(cfg, build_model(cfg, train_data))
    with pytest.raises(checkpoint.CheckpointError, match="written by model GRU4Rec, not SASRec"):
        trainer.resume_checkpoint(gru)

    own_dataset(root, seed=8)  # same catalogue size: the weights fit, but the ids mean other items
    cfg = build_config("SASRec", "shop", config_dict=config, cmd_args=[])
    _, train_data, valid_data, _ = prepare_data(cfg)
    trainer = get_trainer(cfg["MODEL_TYPE"], "SASRec")(cfg, build_model(cfg, train_data))
    trainer.resume_checkpoint(sasrec)  # RecBole's API: the data is known, and checked, in fit
    with pytest.raises(checkpoint.CheckpointError, match="trained on other data .*other internal ids"):
        trainer.fit(train_data, valid_data)

    own_dataset(root, extra_items=2)  # a bigger catalogue: the weights do not even fit
    cfg = build_config("SASRec", "shop", config_dict=config, cmd_args=[])
    _, train_data, valid_data, _ = prepare_data(cfg)
    trainer = get_trainer(cfg["MODEL_TYPE"], "SASRec")(cfg, build_model(cfg, train_data))
    with pytest.raises(checkpoint.CheckpointError, match="'item_embedding.weight' has shape \\[41, 16\\] in the file and \\[43, 16\\]"):
        trainer.resume_checkpoint(sasrec)


def test_a_renamed_preset_with_the_same_keys_still_resumes_and_a_changed_key_does_not():
    # A preset only selects values of other keys; those are what resuming must keep.
    stored = {"preset": "recommended", "training_schedule": "end_to_end", "beta": 1.0}
    assert checkpoint.config_differences(stored, dict(stored, preset="anchor_cos_natural")) == []
    changed = dict(stored, preset="recommended", training_schedule="backbone_first")
    assert checkpoint.config_differences(stored, changed) == ["training_schedule: 'end_to_end' -> 'backbone_first'"]


def test_a_run_written_before_a_key_existed_resumes_only_under_the_value_it_trained_with():
    stored = {"training_schedule": "backbone_first", "beta": 1.0}  # written before thought_rec_weight existed
    assert checkpoint.config_differences(stored, dict(stored, thought_rec_weight=0.0)) == []
    assert checkpoint.config_differences(stored, dict(stored, thought_rec_weight=0.5)) == [
        "thought_rec_weight: 0.0 -> 0.5"]
    assert checkpoint.config_differences(stored, dict(stored, some_new_key=0.0)) == [
        "some_new_key: None -> 0.0"]  # a key not declared as added later is still a difference


# Every model key of properties/model/*.yaml when KEYS_ADDED_LATER was started (2026-12-07). A key added since must be
# declared there with the value earlier runs computed, or every run written before it can no longer resume.
MODEL_KEYS_BEFORE_THE_REGISTRY = frozenset({
    'ablation', 'adv_eps', 'aggregation', 'align_gradient', 'alpha', 'attn_dropout_prob', 'backbone_checkpoint',
    'backbone_rec_weight', 'beam_width', 'beta', 'cl_similarity', 'cl_temperature', 'cl_weight', 'clip_eps',
    'clip_grad_norm', 'codebook_size', 'core_layers', 'd_ff', 'd_kv', 'd_model', 'decoder_layers',
    'denoiser_dropout', 'denoiser_hidden_mult', 'denoiser_output', 'denoiser_zero_init', 'depth_cap_factor',
    'depth_sampling', 'depth_sigma', 'detach_actions', 'detach_target', 'diagnose', 'diagnose_every', 'diff_loss',
    'diff_loss_reduction', 'diffusion_steps', 'dropout_prob', 'encoder_layers', 'epochs', 'eval_depth', 'eval_init',
    'eval_init_noise', 'eval_latent', 'eval_noise_draws', 'eval_noise_seed', 'eval_residual_scale',
    'eval_sample_intermediate', 'group_size', 'hidden_act', 'hidden_dropout_prob', 'hidden_size',
    'init_distribution', 'init_noise_relative', 'init_noise_scale', 'init_std', 'initializer_range', 'inner_size',
    'kl_beta', 'kl_weight', 'layer_norm_eps', 'layer_type', 'learner', 'learning_rate', 'loss_type',
    'mask_false_negatives', 'mean_depth', 'n_heads', 'n_layers', 'noise_factor', 'noisy_self_feed', 'pl_weight',
    'policy_mean', 'policy_step_reduction', 'pooling', 'pre_layers', 'pre_model_path', 'preset', 'qk_dim',
    'reason_step', 'reasoning_init', 'reasoning_learning_rate', 'reasoning_steps', 'reward', 'reward_candidates',
    'reward_k', 'reward_rank_method', 'rollout_depth', 'rpt_epochs', 'rpt_filter', 'rpt_filter_topk',
    'rpt_filter_trials', 'rpt_learning_rate', 'same_target_positive', 'scale_eval_logits', 'schedule_s',
    'schedule_use', 'sid_decoder_dropout', 'sid_decoder_heads', 'sid_decoder_inner_size', 'sid_decoder_layers',
    'sigma_max', 'sigma_min', 'sigma_softplus_offset', 'sla_weight', 'spt_epochs', 'spt_learning_rate',
    'stage1_epochs', 'state_scale', 'stopping_step', 'tau', 'temp_scale', 'temperature', 'think_context',
    'think_dropout', 'think_heads', 'think_inner_size', 'think_layers', 'think_norm_first', 'think_step_embedding',
    'tie_sid_heads', 'time_bias', 'time_bias_uses_target', 'tla_weight', 'train_batch_size',
    'train_sample_intermediate', 'train_stage', 'training_schedule', 'two_stage_finetune_loss', 'use_diffusion',
    'user_tokens', 'v_dim', 'warmup', 'wrapper_dropout',
})


def test_every_model_key_added_since_the_registry_is_declared_with_its_earlier_value():
    added = set()
    for path in sorted((ROOT / "properties" / "model").glob("*.yaml")):
        added |= set(yaml.safe_load(path.read_text(encoding="utf-8")) or {}) - MODEL_KEYS_BEFORE_THE_REGISTRY
    missing = sorted(added - set(checkpoint.KEYS_ADDED_LATER))
    assert not missing, (f"{missing}: new model keys; add each to checkpoint.KEYS_ADDED_LATER with the value that "
                         "computes what runs written before it computed, so those runs still resume")


def test_a_run_written_before_think_output_existed_resumes_under_direct_thoughts():
    stored = {"thought_rec_weight": 1.0}
    assert checkpoint.config_differences(stored, dict(stored, think_output="direct")) == []
    assert checkpoint.config_differences(stored, dict(stored, think_output="residual")) == [
        "think_output: 'direct' -> 'residual'"]
