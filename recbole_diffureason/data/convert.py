"""Turn the two common public sequential-recommendation formats into RecBole atomic files.

* ``text``: one user per line, ``user_id item_id item_id ...`` in chronological order (SASRec, S3-Rec,
  FMLP-Rec and many other repositories ship Beauty/Sports/Toys this way).
* ``lcrec``: a JSON object ``{"user": [item, item, ...], ...}``, chronological (LC-Rec, LETTER and TIGER
  reimplementations).

Neither format has timestamps, so the position in the user's sequence becomes the ``timestamp`` field;
RecBole's ``order: TO`` then keeps the file's order, which is what the papers' leave-one-out split uses.

Usage::

    python -m recbole_diffureason.data.convert --format text \\
        --input path/to/Beauty.txt --name Amazon_Beauty --out dataset
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

FORMATS = ("text", "lcrec")
INTER_HEADER = "user_id:token\titem_id:token\ttimestamp:float"


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

    def summary(self) -> str:
        return (
            f"{self.users} users, {self.items} items, {self.interactions} interactions, "
            f"avg length {self.avg_length:.2f}, shortest user {self.min_user_length}, rarest item {self.min_item_count} "
            f"-> {self.output}"
        )


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
        raise MalformedDatasetError(f"{path}: not valid JSON ({err}).") from None
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
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        head = f.read(64).lstrip()
    return "lcrec" if head.startswith("{") else "text"


def write_atomic_inter(sequences: Dict[str, List[str]], out_file: Path) -> None:
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(out_file.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(INTER_HEADER + "\n")
        for user, items in sequences.items():
            for position, item in enumerate(items):
                f.write(f"{user}\t{item}\t{position}\n")
    tmp.replace(out_file)


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
) -> ConversionStats:
    """Convert ``input_path`` into ``<out_dir>/<name>/<name>.inter`` and return its statistics."""
    input_path = Path(input_path)
    if not input_path.is_file():
        raise FileNotFoundError(f"Input file '{input_path}' does not exist.")
    if not name or any(c in name for c in "/\\ "):
        raise ValueError(f"Dataset name {name!r} must be non-empty, without spaces or slashes.")
    fmt = guess_format(input_path) if fmt == "auto" else fmt
    if fmt not in READERS:
        raise ValueError(f"Unknown format {fmt!r}; choose one of {', '.join(FORMATS)} or auto.")
    out_file = Path(out_dir) / name / f"{name}.inter"
    if out_file.exists() and not force:
        raise FileExistsError(f"'{out_file}' already exists; pass --force to overwrite it.")
    sequences = READERS[fmt](input_path)
    write_atomic_inter(sequences, out_file)
    stats = sequence_stats(sequences, str(out_file))
    with open(out_file.with_suffix(".stats.json"), "w", encoding="utf-8") as f:
        json.dump({"source": str(input_path.resolve()), "format": fmt, **asdict(stats)}, f, indent=2)
    return stats


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convert", description="Convert a public sequential dataset into RecBole atomic files."
    )
    parser.add_argument("--input", required=True, help="the source file (text lines or LC-Rec JSON)")
    parser.add_argument("--name", required=True, help="dataset name, as later passed to --dataset")
    parser.add_argument("--out", default="dataset", help="data_path folder (default: dataset)")
    parser.add_argument("--format", default="auto", choices=("auto",) + FORMATS, help="input format")
    parser.add_argument("--force", action="store_true", help="overwrite an existing converted dataset")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        stats = convert(args.input, args.name, args.out, args.format, args.force)
    except (MalformedDatasetError, FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Converted {args.input}: {stats.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
