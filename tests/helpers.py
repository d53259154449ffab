"""Helpers shared by the model tests."""

from __future__ import annotations

import torch

from recbole_diffureason.quick_start import build_config, build_model, prepare_data


def build(model_name: str, config_dict: dict, **overrides):
    """``(config, model, train_data, valid_data, test_data)`` for ``model_name`` on the tiny dataset."""
    config = build_config(model_name, "tiny", config_dict={**config_dict, **overrides}, cmd_args=[])
    _, train_data, valid_data, test_data = prepare_data(config)
    return config, build_model(config, train_data), train_data, valid_data, test_data


def first_batch(loader):
    """The interaction of a loader's first batch (evaluation loaders yield tuples)."""
    batch = next(iter(loader))
    return batch[0] if isinstance(batch, tuple) else batch


def additive_mask(valid: torch.Tensor) -> torch.Tensor:
    """RecBole's causal + padding mask for a right-padded batch."""
    causal = torch.tril(torch.ones(valid.size(1), valid.size(1), dtype=torch.bool))
    return torch.where(valid[:, None, None, :] & causal, 0.0, -10000.0)


def right_padded(lengths, length: int = 6):
    valid = torch.zeros(len(lengths), length, dtype=torch.bool)
    for row, length in enumerate(lengths):
        valid[row, :length] = True
    return valid


def tiny_data_with_sids(folder):
    """A private copy of the tiny dataset with 3-level SIDs (codebook 8) written by ``tokenize``; its data_path."""
    from recbole_diffureason.sid.tokenize import tokenize
    from tests.conftest import N_ITEMS, write_tiny_inter

    data = write_tiny_inter(folder / "sid_data", name="tiny")
    reference = folder / "ref.tsv"
    reference.write_text("item_id\tsid\n" + "".join(f"i{i}\t{i % 3} {i % 5} {i // 5 % 8}\n"
                                                      for i in range(1, N_ITEMS + 1)))
    tokenize("tiny", data, sids=reference, codebook_size=8)
    return data
