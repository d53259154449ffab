"""HSTU: the layer's equations on a hand-checked example, the time buckets, and the ID model in RecBole."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recbole_diffureason.modules.hstu import HSTULayer, next_position_timestamps, time_buckets
from recbole_diffureason.quick_start import run
from tests.helpers import build, first_batch


def test_time_buckets_follow_the_log_rule():
    delta = torch.tensor([0, 1, 2, 3, 10, 1000, -1000, 1e40], dtype=torch.float64)
    expected = [0, 0, int(math.log(2) / 0.301), int(math.log(3) / 0.301), int(math.log(10) / 0.301),
                int(math.log(1000) / 0.301), int(math.log(1000) / 0.301), 128]
    assert time_buckets(delta).tolist() == expected


def test_next_position_timestamps_use_the_query_for_the_last_item():
    times = torch.tensor([[1.0, 5.0, 9.0, 0.0], [2.0, 3.0, 0.0, 0.0]])
    lengths = torch.tensor([3, 2])
    assert next_position_timestamps(times, lengths, torch.tensor([20.0, 7.0])).tolist() == [
        [5.0, 9.0, 20.0, 0.0], [3.0, 7.0, 0.0, 0.0]]
    assert next_position_timestamps(times, lengths, None)[:, :3].tolist() == [[5.0, 9.0, 9.0], [3.0, 3.0, 0.0]]


def test_layer_equations_on_a_hand_checked_example():
    torch.manual_seed(0)
    d, n = 2, 3
    layer = HSTULayer(d, n_heads=1, qk_dim=d, v_dim=d, max_len=n, dropout=0.0, use_time_bias=False)
    with torch.no_grad():
        layer.uvqk.copy_(torch.arange(16, dtype=torch.float).view(2, 8) / 10 - 0.4)
        layer.bias.position.zero_()
        layer.output.weight.copy_(torch.eye(2))
        layer.output.bias.zero_()
    x = torch.tensor([[[1.0, -1.0], [0.5, 2.0], [3.0, 3.5]]])
    valid = torch.tensor([[True, True, False]])  # the third position is padding
    out = layer(x, valid)
    # By hand: LN without affine, SiLU projections, SiLU(QK^T)/N_max with the causal and padding mask, U * LN(AV).
    normed = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-6)
    u, v, q, k = torch.split(F.silu(normed @ layer.uvqk), [2, 2, 2, 2], dim=-1)
    attention = F.silu(q @ k.transpose(-1, -2)) / n
    attention = attention * torch.tensor([[1.0, 0, 0], [1, 1, 0], [0, 0, 0]])
    av = attention @ v
    av_normed = (av - av.mean(-1, keepdim=True)) / torch.sqrt(av.var(-1, unbiased=False, keepdim=True) + 1e-6)
    assert torch.allclose(out, u * av_normed + x, atol=1e-5)
    # No softmax: scaling the keys scales the aggregation instead of leaving it normalised.
    assert not torch.allclose(attention.sum(-1)[0, :2], torch.ones(2))


def test_output_of_a_row_does_not_depend_on_the_rest_of_its_batch():
    torch.manual_seed(1)
    layer = HSTULayer(8, 2, 4, 4, max_len=6, dropout=0.0).eval()
    x = torch.randn(2, 6, 8)
    valid = torch.tensor([[True] * 6, [True, True, False, False, False, False]])
    together = layer(x, valid)
    alone = layer(x[1:], valid[1:])
    assert torch.allclose(together[1:, :2], alone[:, :2], atol=1e-6)


@pytest.fixture
def hstu_config(tiny_config):
    return {**tiny_config, "hidden_size": 16, "n_heads": 2, "learning_rate": 0.001, "train_batch_size": 64}


def test_hstu_trains_and_evaluates_through_recbole(hstu_config):
    config, model, train_data, _, test_data = build("HSTU", hstu_config)
    assert model.time_bias  # the tiny dataset has timestamps
    batch = first_batch(train_data)
    (loss,) = model.calculate_loss(batch)
    loss.backward()
    assert model.encoder.layers[0].bias.time.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        eval_batch = first_batch(test_data)
        scores = model.full_sort_predict(eval_batch)
        assert scores.shape == (len(eval_batch), model.n_items)
        assert scores.abs().max() <= 1 / 0.05 + 1e-4  # cosine / temperature
    result = run("HSTU", "tiny", config_dict={**hstu_config, "epochs": 2}, cmd_args=[])
    assert len(result["history"]) == 2 and 0 <= result["test_result"]["ndcg@10"] <= 1
