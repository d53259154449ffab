"""Dataset conversion from the public formats, and the message when a dataset is missing."""

from __future__ import annotations

import json

import pytest

from recbole_diffureason.data.convert import MalformedDatasetError, convert, main
from recbole_diffureason.data.locate import DatasetNotFoundError, check_dataset


def read_inter(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0], [line.split("\t") for line in lines[1:]]


def test_text_format_becomes_an_atomic_file_in_order(tmp_path):
    source = tmp_path / "seq.txt"
    source.write_text("1 5 6 7\n2 7 5\n\n3 6 6 5 9\n", encoding="utf-8")
    stats = convert(source, "toy", tmp_path / "out", fmt="text")
    header, rows = read_inter(tmp_path / "out" / "toy" / "toy.inter")
    assert header == "user_id:token\titem_id:token\ttimestamp:float"
    assert rows[:4] == [["1", "5", "0"], ["1", "6", "1"], ["1", "7", "2"], ["2", "7", "0"]]
    assert (stats.users, stats.items, stats.interactions) == (3, 4, 9)
    assert stats.min_user_length == 2 and stats.min_item_count == 1
    meta = json.loads((tmp_path / "out" / "toy" / "toy.stats.json").read_text())
    assert meta["format"] == "text" and meta["interactions"] == 9


def test_lcrec_json_is_detected_and_converted(tmp_path):
    source = tmp_path / "inter.json"
    source.write_text(json.dumps({"0": [3, 1, 2], "1": [2, 3]}), encoding="utf-8")
    stats = convert(source, "lc", tmp_path)
    _, rows = read_inter(tmp_path / "lc" / "lc.inter")
    assert rows[0] == ["0", "3", "0"] and rows[-1] == ["1", "3", "1"]
    assert stats.users == 2 and stats.interactions == 5


@pytest.mark.parametrize("content,fmt,message", [
    ("1 5 6\n2\n", "text", r"seq.txt:2: user '2' has no items"),
    ("1 5 6\n1 7 8\n", "text", "appears on more than one line"),
    ("", "text", "no user lines"),
    ('{"0": [1, 2], "1": []}', "lcrec", "non-empty list"),
    ('{"0": [1, 2.5]}', "lcrec", "integers or strings"),
    ('{"0": [1, 2]', "lcrec", "not valid JSON"),
    ("[1, 2, 3]", "lcrec", "expected a non-empty JSON object"),
])
def test_malformed_input_is_named_precisely(tmp_path, content, fmt, message):
    source = tmp_path / "seq.txt"
    source.write_text(content, encoding="utf-8")
    with pytest.raises(MalformedDatasetError, match=message):
        convert(source, "bad", tmp_path / "out", fmt=fmt)
    assert not (tmp_path / "out" / "bad" / "bad.inter").exists()


def test_non_utf8_and_missing_files(tmp_path):
    binary = tmp_path / "x.txt"
    binary.write_bytes(b"1 \xff\xfe 3\n")
    with pytest.raises(MalformedDatasetError, match="not UTF-8"):
        convert(binary, "bin", tmp_path, fmt="text")
    with pytest.raises(FileNotFoundError):
        convert(tmp_path / "nope.txt", "x", tmp_path)


def test_existing_output_needs_force(tmp_path):
    source = tmp_path / "s.txt"
    source.write_text("1 2 3\n")
    convert(source, "d", tmp_path)
    with pytest.raises(FileExistsError, match="--force"):
        convert(source, "d", tmp_path)
    convert(source, "d", tmp_path, force=True)


def test_convert_command_line(tmp_path, capsys):
    source = tmp_path / "s.txt"
    source.write_text("1 2 3\n2 3 4\n")
    assert main(["--input", str(source), "--name", "cli", "--out", str(tmp_path)]) == 0
    assert "2 users" in capsys.readouterr().out
    assert main(["--input", str(tmp_path / "missing"), "--name", "cli", "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


class FakeConfig(dict):
    pass


def test_missing_dataset_message_says_how_to_get_it(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "other.inter").write_text("x")
    cfg = FakeConfig(dataset="Amazon_Beauty", data_path=str(tmp_path / "Amazon_Beauty"), allow_download=False)
    with pytest.raises(DatasetNotFoundError) as err:
        check_dataset(cfg)
    text = str(err.value)
    assert "Amazon_Beauty.inter" in text and "other" in text and "ml-100k" in text
    assert "convert --name Amazon_Beauty" in text and "Beauty.txt" in text
    cfg = FakeConfig(dataset="amazon-beauty", data_path=str(tmp_path / "amazon-beauty"), allow_download=False)
    with pytest.raises(DatasetNotFoundError, match="--allow_download=True"):
        check_dataset(cfg)
    check_dataset(FakeConfig(dataset="ml-100k", data_path="anywhere", allow_download=False))
