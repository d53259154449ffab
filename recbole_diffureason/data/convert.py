"""Turn the two common public sequential-recommendation formats into RecBole atomic files.

* ``text``: one user per line, ``user_id item_id item_id ...`` in chronological order (SASRec, S3-Rec,
  FMLP-Rec and many other repositories ship Beauty/Sports/Toys this way).
* ``lcrec``: a JSON object ``{"user": [item, item, ...], ...}``, chronological (LC-Rec, LETTER and TIGER
  reimplementations).

Neither format has timestamps, so the position in the user's sequence becomes the ``timestamp`` field;
RecBole's ``order: TO`` then keeps the file's order, which is what the papers' leave-one-out split uses.

Next to ``<name>.inter`` the converter writes ``<name>.yaml``, which ``DRConfig`` loads as a dataset layer:
the columns to load (RecBole's defaults would not load ``timestamp``) and the papers' protocol (k-core,
chronological leave-one-out, history 20, full ranking, Recall/NDCG@5/10/20, model selection on NDCG@10), so
``--dataset=<name>`` trains exactly like ``Amazon_Beauty``. ``<name>.stats.json`` records the source.

Usage::

    python -m recbole_diffureason.data.convert --format text \\
        --input path/to/Beauty.txt --name Amazon_Beauty --out dataset
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from recbole_diffureason.data.locate import recbole_reserved_names

FORMATS = ("text", "lcrec")
INTER_HEADER = "user_id:token\titem_id:token\ttimestamp:float"
DEFAULT_MIN_INTER = 5  # the papers' 5-core
# A dataset name is a folder and a file stem under --out: no separators, no leading dot (so no '..').
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class MalformedDatasetError(ValueError):
    """The input file does not follow the format it claims to be in."""


@dataclass
class ConversionStats:
    users: int
    items: int
    interactions: int
    avg_length: float
    min_user_length: int
    min_item_count: int
    output: str
    min_inter: int = 1  # the k of the k-core filter the dataset YAML asks RecBole for
    kept_users: int = 0  # what RecBole keeps after that filter
    kept_items: int = 0
    kept_interactions: int = 0
    config: str = ""  # the dataset YAML

    def summary(self) -> str:
        text = (
            f"{self.users} users, {self.items} items, {self.interactions} interactions, "
            f"avg length {self.avg_length:.2f}, shortest user {self.min_user_length}, rarest item {self.min_item_count} "
            f"-> {self.output}"
        )
        if self.min_inter > 1:
            text += (f"; RecBole's {self.min_inter}-core filter keeps {self.kept_users} users, {self.kept_items} items, "
                     f"{self.kept_interactions} interactions")
        return text + (f"; settings in {self.config}" if self.config else "")


def _check_token(token: str, where: str) -> str:
    if not token or any(c in token for c in "\t\r\n"):
        raise MalformedDatasetError(f"{where}: id {token!r} is empty or holds a tab or newline.")
    return token


def read_text_sequences(path: Path) -> Dict[str, List[str]]:
    """Parse ``user item item ...`` lines; every user once, with at least one item."""
    sequences: Dict[str, List[str]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise MalformedDatasetError(f"{path}: not UTF-8 text ({err}).") from None
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        where = f"{path}:{number}"
        if len(tokens) < 2:
            raise MalformedDatasetError(
                f"{where}: user {tokens[0]!r} has no items. Each line must be 'user_id item_id item_id ...'."
            )
        user = _check_token(tokens[0], where)
        if user in sequences:
            raise MalformedDatasetError(f"{where}: user {user!r} appears on more than one line.")
        sequences[user] = [_check_token(t, where) for t in tokens[1:]]
    if not sequences:
        raise MalformedDatasetError(f"{path}: no user lines found.")
    return sequences


def read_lcrec_sequences(path: Path) -> Dict[str, List[str]]:
    """Parse LC-Rec's ``{"user": [item, ...]}`` JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        hint = "" if guess_format(path) == "lcrec" else " If it holds 'user item item ...' lines, pass --format text."
        raise MalformedDatasetError(f"{path}: not valid JSON ({err}).{hint}") from None
    if not isinstance(data, dict) or not data:
        raise MalformedDatasetError(f"{path}: expected a non-empty JSON object {{\"user\": [item, ...]}}.")
    sequences: Dict[str, List[str]] = {}
    for user, items in data.items():
        where = f"{path}: user {user!r}"
        if not isinstance(items, list) or not items:
            raise MalformedDatasetError(f"{where}: expected a non-empty list of item ids, got {items!r:.60}.")
        bad = [i for i in items if isinstance(i, bool) or not isinstance(i, (int, str))]
        if bad:
            raise MalformedDatasetError(f"{where}: item ids must be integers or strings, got {bad[0]!r}.")
        sequences[_check_token(str(user), where)] = [_check_token(str(i), where) for i in items]
    return sequences


READERS = {"text": read_text_sequences, "lcrec": read_lcrec_sequences}


def guess_format(path: Path) -> str:
    """``lcrec`` when the file starts like JSON (``{`` or ``[``), else ``text``."""
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        head = f.read(64).lstrip()
    return "lcrec" if head[:1] in ("{", "[") else "text"


def check_format(path: Path, fmt: str) -> None:
    """Refuse a JSON file read as text lines: ``{"u1":`` would become a user and ``[3,`` an item."""
    if fmt == "text" and guess_format(path) == "lcrec":
        raise MalformedDatasetError(
            f"{path}: starts with JSON, not with 'user_id item_id ...' text lines. Pass --format lcrec "
            "(LC-Rec's {\"user\": [items]} JSON) or --format auto."
        )


def check_name(name: str) -> None:
    """A name that stays inside ``--out`` and that RecBole will not replace by its own dataset."""
    if not NAME_PATTERN.fullmatch(name or ""):
        raise ValueError(
            f"Dataset name {name!r} must be a plain folder name: letters, digits, '_', '-' and '.', not starting "
            "with '.', without slashes or spaces (it becomes <out>/<name>/<name>.inter), e.g. --name MyShop."
        )
    reserved = recbole_reserved_names()
    if name in reserved:
        raise ValueError(
            f"Dataset name {name!r} is taken by RecBole: {reserved[name]}, so your data would never be used. "
            f"Choose another name, e.g. --name {name}_own."
        )


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_atomic_inter(sequences: Dict[str, List[str]], out_file: Path) -> None:
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(out_file.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(INTER_HEADER + "\n")
        for user, items in sequences.items():
            for position, item in enumerate(items):
                f.write(f"{user}\t{item}\t{position}\n")
    tmp.replace(out_file)


def dataset_yaml(name: str, min_inter: int, source: str) -> str:
    """The dataset layer ``DRConfig`` loads from ``<data_path>/<name>/<name>.yaml``: the papers' protocol, as in
    ``properties/dataset/Amazon_Beauty.yaml`` (``tests/test_convert.py`` checks that the two agree)."""
    interval = f'"[{min_inter},inf)"'
    return f"""# Written by `run_recbole_dr.py convert` for dataset {name} (source: {source}).
# DRConfig loads it after RecBole's and this plugin's dataset YAMLs; config files, config_dict and --key=value
# override it. It encodes the papers' protocol: k-core, chronological leave-one-out, history 20, full ranking,
# Recall/NDCG@5/10/20, model selection on valid NDCG@10.
field_separator: "\\t"           # (str) Column separator of the atomic file.
USER_ID_FIELD: user_id          # (str) User id column.
ITEM_ID_FIELD: item_id          # (str) Item id column.
TIME_FIELD: timestamp           # (str) Position in the user's sequence (the source has no timestamps).
load_col:                       # (dict) Columns to load; SequentialDataset sorts by the time field.
  inter: [user_id, item_id, timestamp]
user_inter_num_interval: {interval:<12} # (str) {min_inter}-core on users (convert --min_inter).
item_inter_num_interval: {interval:<12} # (str) {min_inter}-core on items (convert --min_inter).
MAX_ITEM_LIST_LENGTH: 20        # (int) History length kept (most recent items).
eval_args:                      # (dict) Leave-one-out by time, full ranking.
  split: {{LS: valid_and_test}}
  order: TO
  mode: full
metrics: [Recall, NDCG]         # (list) Ranking metrics.
topk: [5, 10, 20]               # (list) Cutoffs.
valid_metric: NDCG@10           # (str) Early stopping and model selection metric.
"""


def k_core(sequences: Dict[str, List[str]], k: int) -> Dict[str, List[str]]:
    """What RecBole's ``user_inter_num_interval``/``item_inter_num_interval`` of ``[k,inf)`` keep: drop users and
    items with fewer than ``k`` interactions until none is left (the k-core is the same in any order)."""
    kept = sequences
    while True:
        counts = Counter(item for items in kept.values() for item in items)
        rare = {item for item, count in counts.items() if count < k}
        trimmed = {u: [i for i in items if i not in rare] for u, items in kept.items()}
        trimmed = {u: items for u, items in trimmed.items() if len(items) >= k}
        if sum(map(len, trimmed.values())) == sum(map(len, kept.values())):
            return trimmed
        kept = trimmed


def sequence_stats(sequences: Dict[str, List[str]], output: str) -> ConversionStats:
    item_counts = Counter(item for items in sequences.values() for item in items)
    lengths = [len(items) for items in sequences.values()]
    return ConversionStats(
        users=len(sequences),
        items=len(item_counts),
        interactions=sum(lengths),
        avg_length=sum(lengths) / len(lengths),
        min_user_length=min(lengths),
        min_item_count=min(item_counts.values()),
        output=output,
    )


def convert(
    input_path: str | Path,
    name: str,
    out_dir: str | Path = "dataset",
    fmt: str = "auto",
    force: bool = False,
    min_inter: int = DEFAULT_MIN_INTER,
) -> ConversionStats:
    """Convert ``input_path`` into ``<out_dir>/<name>/<name>.inter`` plus its dataset YAML and statistics.

    Everything is checked before anything is written: the name, the format and every line of the input.
    ``force`` overwrites an earlier conversion. ``stats.kept_users`` says what the ``min_inter``-core filter
    of the dataset YAML leaves (0: training would stop; ``main`` warns).
    """
    input_path = Path(input_path)
    check_name(name)
    if not isinstance(min_inter, int) or isinstance(min_inter, bool) or min_inter < 1:
        raise ValueError(f"--min_inter must be an integer >= 1 (1 keeps every interaction), got {min_inter!r}.")
    if not input_path.is_file():
        raise FileNotFoundError(f"Input file '{input_path}' does not exist.")
    fmt = guess_format(input_path) if fmt == "auto" else fmt
    if fmt not in READERS:
        raise ValueError(f"Unknown format {fmt!r}; choose one of {', '.join(FORMATS)} or auto.")
    check_format(input_path, fmt)
    folder = Path(out_dir) / name
    out_file, yaml_file, stats_file = (folder / f"{name}{suffix}" for suffix in (".inter", ".yaml", ".stats.json"))
    existing = [str(p) for p in (out_file, yaml_file, stats_file) if p.exists()]
    if existing and not force:
        raise FileExistsError(f"'{existing[0]}' already exists; pass --force to overwrite the converted dataset.")
    sequences = READERS[fmt](input_path)
    kept = k_core(sequences, min_inter)
    stats = sequence_stats(sequences, str(out_file))
    stats.min_inter, stats.config = min_inter, str(yaml_file)
    stats.kept_users, stats.kept_items = len(kept), len({i for items in kept.values() for i in items})
    stats.kept_interactions = sum(map(len, kept.values()))
    write_atomic_inter(sequences, out_file)
    _write_text(yaml_file, dataset_yaml(name, min_inter, input_path.name))
    _write_text(stats_file, json.dumps({"source": str(input_path.resolve()), "format": fmt, **asdict(stats)},
                                       indent=2))
    return stats


class _UsageError(ValueError):
    """A bad command line (missing or malformed argument)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own prints the usage block and exits: one line instead
        raise _UsageError(f"{self.prog}: {message} (see {self.prog} --help).")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="run_recbole_dr.py convert",
        description="Convert a public sequential dataset into RecBole atomic files plus the dataset YAML "
        "(<out>/<name>/<name>.yaml) that DRConfig loads: the papers' protocol.",
    )
    parser.add_argument("--input", required=True, help="the source file (text lines or LC-Rec JSON)")
    parser.add_argument("--name", required=True, help="dataset name, as later passed to --dataset")
    parser.add_argument("--out", default="dataset", help="data_path folder (default: dataset)")
    parser.add_argument("--format", default="auto", choices=("auto",) + FORMATS, help="input format")
    parser.add_argument("--force", action="store_true", help="overwrite an existing converted dataset")
    parser.add_argument("--min_inter", type=int, default=DEFAULT_MIN_INTER,
                        help=f"k of the k-core filter written to the dataset YAML (default {DEFAULT_MIN_INTER}, the "
                        "papers' protocol; 1 keeps every interaction)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        stats = convert(args.input, args.name, args.out, args.format, args.force, args.min_inter)
    except (MalformedDatasetError, FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Converted {args.input}: {stats.summary()}")
    if stats.kept_users == 0:
        print(f"warning: no user and item keep {stats.min_inter} interactions, so training on '{args.name}' would "
              f"stop with an empty dataset. Convert again with --min_inter 1 --force to keep every interaction, or "
              "lower user_inter_num_interval and item_inter_num_interval when training.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
