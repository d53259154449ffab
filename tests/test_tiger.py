"""TIGER: T5 parts (relative buckets, cached decoding), token layout, beam search against the exact scorer."""

from __future__ import annotations

import pytest
import torch

from recbole_diffureason.modules.t5 import T5Stack, relative_position_bucket
from recbole_diffureason.quick_start import run
from tests.conftest import N_ITEMS
from tests.helpers import build, first_batch, tiny_data_with_sids


def test_relative_position_buckets_are_t5s():
    relative = torch.tensor([0, 1, -1, 7, -7, 8, 200, -200])
    assert relative_position_bucket(relative, bidirectional=True).tolist() == [0, 17, 1, 23, 7, 24, 31, 15]
    assert relative_position_bucket(relative, bidirectional=False).tolist() == [0, 0, 1, 0, 7, 0, 0, 31]


def test_cached_decoder_steps_equal_the_teacher_forced_pass():
    torch.manual_seed(0)
    stack = T5Stack(2, d_model=16, n_heads=2, d_kv=8, d_ff=32, dropout=0.0, decoder=True).eval()
    memory, padding = torch.randn(3, 5, 16), torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] * 5])
    tokens = torch.randn(3, 4, 16)
    with torch.no_grad():
        full = stack.decode(tokens, memory, padding)
        state = stack.start(tokens[:, :1], memory, padding)
        assert torch.allclose(state.last, full[:, 0], atol=1e-5)
        for t in range(1, 4):
            state = stack.step(state, tokens[:, t])
            assert torch.allclose(state.last, full[:, t], atol=1e-5)


@pytest.fixture
def tiger_config(tiny_config, tmp_path):
    data = tiny_data_with_sids(tmp_path)
    return {**tiny_config, "data_path": str(data), "d_model": 16, "encoder_layers": 1, "decoder_layers": 1,
            "n_heads": 2, "d_kv": 8, "d_ff": 32, "codebook_size": 8, "beam_width": 10, "user_tokens": 5,
            "learning_rate": 0.003, "train_batch_size": 64}


def test_encoder_tokens_are_user_sid_tokens_and_eos(tiger_config):
    _, model, train_data, _, _ = build("TIGER", tiger_config)
    batch = first_batch(train_data)
    tokens = model.encoder_tokens(batch)
    row, length = 0, int(batch[model.ITEM_SEQ_LEN][0])
    item = int(batch[model.ITEM_SEQ][row, 0])
    codes = model.item_codes[item].tolist()
    assert tokens[row, 0] == model.eos + 1 + int(batch[model.USER_ID][row]) % 5
    assert tokens[row, 1:4].tolist() == [1 + level * 8 + c for level, c in enumerate(codes)]
    assert tokens[row, 1 + 3 * length] == model.eos and (tokens[row, 2 + 3 * length:] == 0).all()


def test_full_beam_matches_the_exact_ranking_and_training_runs_through_recbole(tiger_config):
    _, model, train_data, _, test_data = build("TIGER", dict(tiger_config, beam_width=N_ITEMS))
    (loss,) = model.calculate_loss(first_batch(train_data))
    loss.backward()
    assert model.encoder.blocks[0].self_attention.relative_bias.weight.grad.abs().sum() > 0
    model.eval()
    batch = first_batch(test_data)
    with torch.no_grad():
        beam, exact = model.full_sort_predict(batch), model.exact_full_sort(batch)
    assert torch.equal(beam.topk(10).indices, exact.topk(10).indices)
    assert torch.allclose(beam.topk(10).values, exact.topk(10).values, atol=1e-4)
    result = run("TIGER", "tiny", config_dict={**tiger_config, "epochs": 2}, cmd_args=[])
    assert len(result["history"]) == 2 and 0 <= result["test_result"]["ndcg@10"] <= 1
