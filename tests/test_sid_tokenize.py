"""``tokenize``: SIDs for a converted dataset from reference SIDs, embeddings or item text, and its errors."""

from __future__ import annotations

import json

import pytest
import torch

from recbole_diffureason.quick_start import build_config, prepare_data
from recbole_diffureason.sid.table import codes_from_dataset, read_sid_tsv
from recbole_diffureason.sid.text import TextEmbeddingError
from recbole_diffureason.sid.tokenize import TokenizeError, tokenize
from tests.conftest import N_ITEMS, write_tiny_inter

SMALL = dict(levels=2, codebook_size=8, hidden_dims=(16,), latent_dim=4, epochs=3, batch_size=16)


@pytest.fixture
def data(tmp_path):
    return write_tiny_inter(tmp_path / "data", name="shop")


def reference_file(path, collide: bool = True):
    lines = ["item_id\tsid"] + [f"i{i}\t{i % 7} {i // 7} {i % 3}" for i in range(1, N_ITEMS + 1)]
    if collide:
        lines[2] = lines[1].replace("i1\t", "i2\t")  # items i1 and i2 share one tuple
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_reference_sids_are_written_where_recbole_loads_them_with_collisions_resolved(data, tmp_path, workdir):
    meta = tokenize("shop", data, sids=reference_file(tmp_path / "ref.tsv"))
    assert meta["source"] == {"kind": "reference", "input": "ref.tsv"} and meta["levels"] == 3
    assert meta["report"]["collision_rate_before"] == pytest.approx(2 / N_ITEMS - 1 / N_ITEMS)
    assert meta["report"]["collision_rate_after"] == 0.0
    assert json.loads((data / "shop" / "shop.sid.json").read_text())["source"]["kind"] == "reference"
    config = build_config("SASRec", "shop", config_dict={
        "data_path": str(data), "load_col": {"inter": ["user_id", "item_id", "timestamp"],
                                             "item": ["item_id", "sid", "has_sid"]}}, cmd_args=[])
    dataset = prepare_data(config)[0]
    codes = codes_from_dataset(dataset)
    assert codes.shape == (dataset.item_num, 3) and (codes[0] == -1).all()
    assert torch.unique(codes[1:], dim=0).size(0) == dataset.item_num - 1
    written = read_sid_tsv(reference_file(tmp_path / "again.tsv", collide=False))
    token = dataset.id2token(dataset.iid_field, 5)
    assert tuple(codes[5].tolist()) == written[token]  # codes follow RecBole's internal item ids


def test_rqvae_from_an_embeddings_file_and_from_item_text(data, tmp_path):
    vectors = {f"i{i}": torch.randn(12) for i in range(1, N_ITEMS + 1)}
    torch.save(vectors, tmp_path / "emb.pt")
    meta = tokenize("shop", data, embeddings=tmp_path / "emb.pt", **SMALL)
    assert meta["source"]["kind"] == "rqvae" and meta["report"]["collision_rate_after"] == 0.0
    assert len(meta["report"]["codebook_usage"]) == 2 and meta["levels"] in (2, 3)  # 3: TIGER's fallback level
    text = tmp_path / "text.tsv"
    text.write_text("item_id\ttitle_phrase\n" + "".join(f"i{i}\tproduct number {i}\n" for i in range(1, N_ITEMS + 1)))
    fake_encoder = lambda texts: torch.stack([torch.tensor([float(len(t)), float(t[-1:] == "1")] * 4) for t in texts])
    meta = tokenize("shop", data, text=text, encoder=fake_encoder, **SMALL)
    assert "item text (text.tsv)" in meta["source"]["input"] and "MiniLM" in meta["source"]["text_model"]
    text.write_text("item_id\ttitle_phrase\n" + "".join(f"i{i}\t{'x' * (i % 4)}\n" for i in range(1, N_ITEMS + 1)))
    meta = tokenize("shop", data, text=text, encoder=fake_encoder, missing_text="empty", **SMALL)
    assert meta["source"]["items_without_text"] == N_ITEMS // 4


def test_bad_input_gets_one_clear_message(data, tmp_path):
    with pytest.raises(TokenizeError, match="exactly one SID source"):
        tokenize("shop", data)
    with pytest.raises(TokenizeError, match="not converted"):
        tokenize("elsewhere", data, sids=reference_file(tmp_path / "ref.tsv"))
    with pytest.raises(TextEmbeddingError, match="does not exist"):
        tokenize("shop", data, text=tmp_path / "missing.tsv", encoder=lambda t: None)
    wrong = tmp_path / "wrong.tsv"
    wrong.write_text("id\ttitle\ni1\tx\n")
    with pytest.raises(TextEmbeddingError, match="needs the columns 'item_id' and 'title_phrase'"):
        tokenize("shop", data, text=wrong, encoder=lambda t: None)
    partial = tmp_path / "partial.tsv"
    partial.write_text("item_id\ttitle_phrase\ni1\tone\ni2\t\n")  # i2's title is empty, i3.. have no row
    with pytest.raises(TextEmbeddingError, match=f"{N_ITEMS - 1} of the dataset's {N_ITEMS} items have no text "
                                                 "\\(i.*--missing_text=empty"):
        tokenize("shop", data, text=partial, encoder=lambda t: None)
    short = tmp_path / "short.tsv"
    short.write_text("item_id\tsid\ni1\t1 2 3\n")
    with pytest.raises(TokenizeError, match=f"no SID for {N_ITEMS - 1} of the dataset's {N_ITEMS} items"):
        tokenize("shop", data, sids=short)
    with pytest.raises(TokenizeError, match="--levels must be a positive integer"):
        tokenize("shop", data, sids=short, levels=0)
    assert not (data / "shop" / "shop.item").exists()  # nothing was written by a refused call


def test_the_command_prints_the_report_and_refuses_bad_input_with_exit_code_2(data, tmp_path, capsys):
    from recbole_diffureason.sid.tokenize import tokenize_main

    assert tokenize_main(["--dataset=shop", f"--data_path={data}", f"--sids={reference_file(tmp_path / 'r.tsv')}"]) == 0
    out = capsys.readouterr().out
    assert "collision rate: 2.50% before, 0.00% after" in out and '"kind": "reference"' in out
    before = (data / "shop" / "shop.item").read_text()
    assert tokenize_main(["--dataset=shop", f"--data_path={data}", f"--text={tmp_path / 'none.tsv'}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert tokenize_main(["--dataset=shop", f"--data_path={data}", "--sids=x", "--hidden_dims=a,b"]) == 2
    assert (data / "shop" / "shop.item").read_text() == before  # a refused call overwrote nothing


def test_tokenize_is_a_subcommand_of_the_command_line(data, tmp_path, capsys):
    from recbole_diffureason.cli import main

    assert main(["tokenize", "--dataset=shop", f"--data_path={data}",
                 f"--sids={reference_file(tmp_path / 'r.tsv')}"]) == 0
    assert (data / "shop" / "shop.item").is_file()
    assert main(["tokenize", "--dataset=shop", f"--data_path={data}"]) == 2
    assert "exactly one SID source" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "tokenize" in capsys.readouterr().out
