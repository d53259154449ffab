"""HSTUSID: SID inputs, the SID decoder, constrained beam search in RecBole's full-sort evaluator, checkpoints."""

from __future__ import annotations

import pytest
import torch

from recbole_diffureason.quick_start import load_data_and_model, run
from recbole_diffureason.sid.decoder import SIDDecoder
from recbole_diffureason.sid.table import SIDTableError
from tests.conftest import N_ITEMS
from tests.helpers import build, first_batch, tiny_data_with_sids


@pytest.fixture
def sid_config(tiny_config, tmp_path):
    data = tiny_data_with_sids(tmp_path)
    return {**tiny_config, "data_path": str(data), "hidden_size": 16, "n_heads": 2, "codebook_size": 8,
            "beam_width": 10, "learning_rate": 0.003, "train_batch_size": 64}


def test_inputs_add_the_id_and_every_level_and_the_loss_trains_everything(sid_config):
    config, model, train_data, _, _ = build("HSTUSID", sid_config)
    assert model.levels == 3 and model.item_codes.shape == (model.n_items, 3)
    seq = torch.tensor([[3, 0]])
    codes = model.item_codes[3]
    expected = model.item_embedding.weight[3] + sum(model.code_embeddings[l].weight[codes[l]] for l in range(3))
    assert torch.allclose(model.input_embeddings(seq)[0, 0], expected)
    padding = model.item_embedding.weight[0] + sum(t.weight[8] for t in model.code_embeddings)
    assert torch.allclose(model.input_embeddings(seq)[0, 1], padding)
    (loss,) = model.calculate_loss(first_batch(train_data))
    loss.backward()
    for name in ("item_embedding.weight", "code_embeddings.0.weight", "decoder.heads.2.weight",
                 "encoder.layers.0.uvqk"):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0, name


def test_beam_scores_are_exact_log_probabilities_and_a_full_beam_matches_the_exact_ranking(sid_config):
    _, model, _, _, test_data = build("HSTUSID", dict(sid_config, beam_width=N_ITEMS))
    model.eval()
    batch = first_batch(test_data)
    with torch.no_grad():
        beam = model.full_sort_predict(batch)
        exact = model.exact_full_sort(batch)
        assert beam.shape == exact.shape == (len(batch), model.n_items)
        assert torch.isinf(beam[:, 0]).all()
        assert torch.equal(beam.topk(10).indices, exact.topk(10).indices)
        assert torch.allclose(beam.topk(10).values, exact.topk(10).values, atol=1e-5)
        assert torch.allclose(model.predict(batch), exact.gather(1, batch[model.ITEM_ID][:, None]).squeeze(1), atol=1e-5)


def test_trains_evaluates_and_round_trips_a_checkpoint(sid_config):
    result = run("HSTUSID", "tiny", config_dict={**sid_config, "epochs": 2}, cmd_args=[])
    assert set(result["test_result"]) == {"recall@5", "recall@10", "ndcg@5", "ndcg@10"}
    config, model, _, _, _, test_data = load_data_and_model(result["saved_model_file"])
    model.eval()
    batch = first_batch(test_data)
    with torch.no_grad():
        first = model.full_sort_predict(batch)
        second = model.full_sort_predict(batch)
    assert torch.equal(first, second)  # beam search is deterministic


def test_beam_narrower_than_the_metrics_is_refused(sid_config):
    from recbole_diffureason.keys import ConfigError

    with pytest.raises(ConfigError, match="'beam_width' \\(5\\) must be at least the largest topk \\(10\\)"):
        build("HSTUSID", dict(sid_config, beam_width=5))


def test_a_dataset_without_sids_says_how_to_make_them(tiny_config):
    with pytest.raises(SIDTableError, match="tokenize --dataset=tiny"):
        build("HSTUSID", dict(tiny_config, hidden_size=16, n_heads=2))


def test_cached_decoding_equals_a_full_pass():
    torch.manual_seed(0)
    tables = torch.nn.ModuleList(torch.nn.Embedding(9, 12) for _ in range(3))
    decoder = SIDDecoder(tables, 12, n_layers=2, n_heads=2, dropout=0.0).eval()
    prefix, codes = torch.randn(4, 2, 12), torch.randint(0, 8, (4, 3))
    with torch.no_grad():
        full = decoder.teacher_forced_logits(prefix, codes)
        state = decoder.start(prefix)
        for level in range(3):
            assert torch.allclose(torch.log_softmax(full[level], -1), decoder.log_probs(state, level), atol=1e-5)
            if level < 2:
                state = decoder.advance(state, codes[:, level], level)
