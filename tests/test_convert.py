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
    stats = convert(source, "toy", tmp_path / "out", fmt="text", min_inter=1)
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
    stats = convert(source, "lc", tmp_path, min_inter=1)
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
    convert(source, "d", tmp_path, min_inter=1)
    with pytest.raises(FileExistsError, match="--force"):
        convert(source, "d", tmp_path, min_inter=1)
    convert(source, "d", tmp_path, force=True, min_inter=1)


def test_convert_command_line(tmp_path, capsys):
    source = tmp_path / "s.txt"
    source.write_text("1 2 3\n2 3 4\n")
    assert main(["--input", str(source), "--name", "cli", "--out", str(tmp_path), "--min_inter", "1"]) == 0
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


# ---------------------------------------------------------------------- own data, end to end (issue 11, item 1)
def ring_text(path, n_users=60, seed=3):
    """A 'user item item ...' file every user and item of which survives the 5-core filter."""
    import random

    rng = random.Random(seed)
    lines = []
    for user in range(n_users):
        item, items = rng.randrange(30), []
        for _ in range(rng.randrange(6, 12)):
            items.append(f"p{item}")
            item = (item + 1) % 30
        lines.append(" ".join([f"c{user}"] + items))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_converted_dataset_trains_with_the_papers_protocol(tmp_path, workdir):
    from recbole_diffureason.quick_start import build_config, run

    stats = convert(ring_text(tmp_path / "shop.txt"), "MyShop", tmp_path / "data", fmt="text")
    assert stats.kept_users == 60 and stats.config.endswith("MyShop.yaml")
    config = build_config("SASRec", "MyShop", config_dict={"data_path": str(tmp_path / "data")}, cmd_args=[])
    assert config["load_col"] == {"inter": ["user_id", "item_id", "timestamp"]}
    assert config["eval_args"]["order"] == "TO" and config["eval_args"]["split"] == {"LS": "valid_and_test"}
    assert config["MAX_ITEM_LIST_LENGTH"] == 20 and config["user_inter_num_interval"] == "[5,inf)"
    small = {"data_path": str(tmp_path / "data"), "epochs": 1, "hidden_size": 16, "inner_size": 32,
             "state": "ERROR", "show_progress": False, "checkpoint_dir": str(workdir / "saved")}
    result = run("SASRec", "MyShop", config_dict=small, cmd_args=[])
    assert set(result["test_result"]) == {f"{m}@{k}" for m in ("recall", "ndcg") for k in (5, 10, 20)}
    # Settings given on the command line still win over the dataset's YAML.
    assert build_config("SASRec", "MyShop", config_dict={"data_path": str(tmp_path / "data")},
                        cmd_args=["--MAX_ITEM_LIST_LENGTH=7"])["MAX_ITEM_LIST_LENGTH"] == 7


@pytest.mark.parametrize("protocol", ["Amazon_Beauty", "Amazon_Instruments"])
def test_dataset_yaml_is_the_papers_protocol(tmp_path, protocol):
    import yaml

    from recbole_diffureason.config import properties_dir

    convert(ring_text(tmp_path / "shop.txt"), "shop", tmp_path, fmt="text")
    written = yaml.safe_load((tmp_path / "shop" / "shop.yaml").read_text(encoding="utf-8"))
    papers = yaml.safe_load((properties_dir() / "dataset" / f"{protocol}.yaml").read_text(encoding="utf-8"))
    assert written == papers


def test_min_inter_sets_the_k_core_and_an_empty_core_is_one_clear_error_when_training(tmp_path, workdir, capsys):
    from recbole_diffureason.cli import main as cli_main

    source = tmp_path / "s.txt"
    source.write_text("1 2 3\n2 3 4\n")
    assert main(["--input", str(source), "--name", "small", "--out", str(tmp_path / "data")]) == 0
    assert "warning: no user and item keep 5 interactions" in capsys.readouterr().err
    assert 'user_inter_num_interval: "[5,inf)"' in (tmp_path / "data" / "small" / "small.yaml").read_text()
    # RecBole's own words would be "ValueError: Some feat is empty" from deep inside its dataset code.
    assert cli_main(["--model=SASRec", "--dataset=small", f"--data_path={tmp_path / 'data'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Dataset 'small' is empty after RecBole's filtering "
                          "(user_inter_num_interval='[5,inf)', item_inter_num_interval='[5,inf)')") and "\n" not in err
    assert "--min_inter 1 --force" in err

    stats = convert(source, "small", tmp_path / "data", min_inter=1, force=True)
    assert (stats.kept_users, stats.kept_items, stats.kept_interactions) == (2, 3, 4)
    assert 'user_inter_num_interval: "[1,inf)"' in (tmp_path / "data" / "small" / "small.yaml").read_text()
    with pytest.raises(ValueError, match="min_inter"):
        convert(source, "other", tmp_path / "data", min_inter=0)
    assert not (tmp_path / "data" / "other").exists()


def test_k_core_matches_recbole_filtering():
    from recbole_diffureason.data.convert import k_core

    # 3-core: item 'x' (2 interactions) goes, so users 'b' and 'c' (2 items left) go, so 'y' is left once and
    # goes, so user 'a' goes: filtering repeats until nothing changes, as RecBole's does.
    sequences = {"a": ["y", "z", "z"], "b": ["x", "y", "z"], "c": ["x", "z", "y"]}
    assert k_core(sequences, 3) == {}
    assert k_core(sequences, 2) == sequences
    assert k_core({"a": ["p", "q", "q"], "b": ["q", "p", "q"], "c": ["r", "q", "q"]}, 2) == {
        "a": ["p", "q", "q"], "b": ["q", "p", "q"], "c": ["q", "q"]}


@pytest.mark.parametrize("content,fmt,message", [
    ('{"u1": [1, 2, 3]}', "text", "--format lcrec"),
    ("u1 1 2 3\nu2 2 3 4\n", "lcrec", "--format text"),
])
def test_a_format_that_does_not_match_the_file_is_refused(tmp_path, content, fmt, message):
    source = tmp_path / "in.data"
    source.write_text(content, encoding="utf-8")
    with pytest.raises(MalformedDatasetError, match=message):
        convert(source, "mismatch", tmp_path / "out", fmt=fmt, min_inter=1)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["..", "../escape", "a/b", "/tmp/abs", "a\\b", ".hidden", "with space", ""])
def test_names_that_leave_the_output_folder_are_refused(tmp_path, name):
    source = tmp_path / "s.txt"
    source.write_text("1 2 3\n")
    out = tmp_path / "nested" / "out"
    with pytest.raises(ValueError, match="plain folder name"):
        convert(source, name, out, min_inter=1)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["s.txt"]  # nothing written anywhere


@pytest.mark.parametrize("name,message", [("ml-100k", "embedded copy"), ("url", "url.yaml")])
def test_names_recbole_would_shadow_are_refused(tmp_path, name, message):
    source = tmp_path / "s.txt"
    source.write_text("1 2 3\n")
    with pytest.raises(ValueError, match=f"taken by RecBole: .*{message}"):
        convert(source, name, tmp_path / "out", min_inter=1)
    assert not (tmp_path / "out").exists()


def test_convert_subcommand_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    from recbole_diffureason.cli import main as cli_main

    source = tmp_path / "in.json"
    source.write_text('{"u1": [1, 2, 3]}', encoding="utf-8")
    for args in (["--name", "..", "--input", str(source)], ["--name", "ml-100k", "--input", str(source)],
                 ["--name", "ok", "--input", str(source), "--format", "text"]):
        assert cli_main(["convert", *args, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_dataset_without_its_yaml_stops_before_recbole_with_the_fix(tmp_path, workdir, capsys):
    """The reviewer's reproduction: a dataset converted without its YAML crashed deep in RecBole with
    "[timestamp] is not exist in interaction"."""
    from recbole_diffureason.cli import main as cli_main

    source = ring_text(tmp_path / "shop.txt")
    convert(source, "MyShop", tmp_path / "data", fmt="text")
    (tmp_path / "data" / "MyShop" / "MyShop.yaml").unlink()
    args = ["--model=SASRec", "--dataset=MyShop", f"--data_path={tmp_path / 'data'}", "--epochs=1"]
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Dataset 'MyShop' has the time column 'timestamp', but load_col") and "\n" not in err
    assert f"convert --input {source.resolve()} --format text --name MyShop" in err and "--force" in err
    assert not (workdir / "log").exists() and not (workdir / "saved").exists()  # nothing written


def test_dataset_without_a_time_column_is_named(tmp_path, workdir):
    from recbole_diffureason.data.locate import DatasetFieldError
    from recbole_diffureason.quick_start import build_config, prepare_data

    folder = tmp_path / "notime"
    folder.mkdir()
    rows = [f"u{u}\ti{(u + s) % 9}" for u in range(20) for s in range(6)]
    (folder / "notime.inter").write_text("user_id:token\titem_id:token\n" + "\n".join(rows) + "\n")
    config = build_config("SASRec", "notime", config_dict={"data_path": str(tmp_path)}, cmd_args=[])
    with pytest.raises(DatasetFieldError, match="has no time column 'timestamp' .*columns of .*: user_id, item_id"):
        prepare_data(config)
    # A general model with a random split needs no time: it loads.
    general = build_config("BPR", "notime", config_dict={"data_path": str(tmp_path)}, cmd_args=[])
    assert prepare_data(general)[0].inter_num == 120


def test_a_broken_dataset_yaml_is_named(tmp_path, workdir):
    from recbole_diffureason.keys import ConfigError
    from recbole_diffureason.quick_start import build_config

    convert(ring_text(tmp_path / "shop.txt"), "MyShop", tmp_path, fmt="text")
    (tmp_path / "MyShop" / "MyShop.yaml").write_text("load_col: [unclosed\n")
    with pytest.raises(ConfigError, match="MyShop.yaml' is not valid YAML"):
        build_config("SASRec", "MyShop", config_dict={"data_path": str(tmp_path)}, cmd_args=[])


def test_bad_convert_arguments_are_one_line(tmp_path, capsys):
    assert main(["--name", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: run_recbole_dr.py convert: the following arguments are required: --input")
    assert "\n" not in err
    assert main(["--input", "f", "--name", "x", "--min_inter", "five"]) == 2
    assert "--min_inter: invalid int value: 'five'" in capsys.readouterr().err
