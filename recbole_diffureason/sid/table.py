"""The Semantic IDs a dataset carries: read, checked, written where RecBole's pipeline loads them.

SIDs travel as an atomic item-feature file ``dataset/<name>/<name>.item`` with the columns ``item_id:token``,
``sid:float_seq`` (the codes, space-separated; RecBole's ``float_seq`` keeps the numbers as they are, where
``token_seq`` would remap them) and ``has_sid:float`` (1 on every row: RecBole fills an item without a row with
zeros, which would read as the valid SID 0 0 0 0). Beside it, ``<name>.sid.json`` records where the SIDs came from (an RQ-VAE run
or a published reference file) and the tokenizer's report, so every run can say which SIDs it used.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

SID_FIELD = "sid"
FLAG_FIELD = "has_sid"


class SIDTableError(ValueError):
    """A SID file or table is missing, malformed or does not cover the dataset's items."""


def read_sid_tsv(path: Path) -> Dict[str, Tuple[int, ...]]:
    """``item token -> codes`` from a ``item_id<TAB>sid`` file (codes space-separated), e.g. the published
    ``Beauty_reference_sids.tsv``."""
    path = Path(path)
    if not path.is_file():
        raise SIDTableError(f"SID file '{path}' does not exist.")
    table: Dict[str, Tuple[int, ...]] = {}
    with open(path, "r", encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["item_id", "sid"]:
            raise SIDTableError(f"{path}: the first line must be the header 'item_id<TAB>sid', got {header!r}.")
        for line, row in enumerate(reader, start=2):
            if len(row) < 2 or not row[0].strip():
                raise SIDTableError(f"{path}, line {line}: expected 'item_id<TAB>sid codes', got {row!r}.")
            try:
                codes = tuple(int(c) for c in row[1].split())
            except ValueError:
                raise SIDTableError(f"{path}, line {line}: SID codes must be integers, got {row[1]!r}.") from None
            if not codes or min(codes) < 0:
                raise SIDTableError(f"{path}, line {line}: a SID needs one or more non-negative codes.")
            table[row[0].strip()] = codes
    lengths = {len(c) for c in table.values()}
    if len(lengths) > 1:
        raise SIDTableError(f"{path}: SIDs of different lengths {sorted(lengths)}; every item needs the same levels.")
    return table


def dataset_item_tokens(inter_file: Path) -> List[str]:
    """The item tokens of an atomic ``.inter`` file, in order of first appearance."""
    with open(inter_file, "r", encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, [])
        names = [h.split(":")[0] for h in header]
        if "item_id" not in names:
            raise SIDTableError(f"{inter_file}: no item_id column in the header {header!r}.")
        column = names.index("item_id")
        seen: Dict[str, None] = {}
        for row in reader:
            if len(row) > column:
                seen.setdefault(row[column], None)
    return list(seen)


def check_coverage(table: Mapping[str, Sequence[int]], items: Sequence[str], what: str) -> None:
    missing = [i for i in items if i not in table]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise SIDTableError(f"{what} has no SID for {len(missing)} of the dataset's {len(items)} items ({shown}).")


def write_sid_files(folder: Path, dataset: str, table: Mapping[str, Sequence[int]], meta: Dict[str, Any]) -> Path:
    """Write ``<dataset>.item`` (``item_id:token``, ``sid:float_seq``, ``has_sid:float``) and ``<dataset>.sid.json``;
    return the first."""
    folder = Path(folder)
    item_file = folder / f"{dataset}.item"
    lines = [f"item_id:token\t{SID_FIELD}:float_seq\t{FLAG_FIELD}:float"]
    lines += [f"{item}\t{' '.join(map(str, codes))}\t1" for item, codes in table.items()]
    item_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / f"{dataset}.sid.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return item_file


def read_sid_meta(folder: Path, dataset: str) -> Optional[Dict[str, Any]]:
    path = Path(folder) / f"{dataset}.sid.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def codes_from_dataset(dataset, field: str = SID_FIELD) -> torch.Tensor:
    """``[n_items, L]`` long codes aligned with RecBole's internal item ids; row 0 (padding) is -1.

    ``dataset`` is a RecBole dataset whose item features hold ``field`` and ``has_sid`` (load them with
    ``load_col: {inter: [...], item: [item_id, sid, has_sid]}``).
    """
    item_feat = dataset.item_feat
    if item_feat is None or field not in item_feat or FLAG_FIELD not in item_feat:
        raise SIDTableError(
            f"Dataset '{dataset.dataset_name}' has no '{field}' item feature. Write the SIDs with "
            f"'run_recbole_dr.py tokenize --dataset={dataset.dataset_name} ...' and load them with "
            f"load_col: {{inter: [...], item: [item_id, {field}, {FLAG_FIELD}]}}.")
    codes = item_feat[field].round().long()
    if codes.dim() != 2:
        raise SIDTableError(f"The '{field}' item feature must be a sequence of codes per item.")
    missing = (item_feat[FLAG_FIELD][1:] < 0.5).nonzero(as_tuple=True)[0] + 1
    if len(missing):
        tokens = dataset.id2token(dataset.iid_field, missing[:5])
        raise SIDTableError(f"{len(missing)} items of '{dataset.dataset_name}' have no SID (e.g. {', '.join(tokens)}); "
                            "run tokenize again on this dataset.")
    codes[0] = -1
    return codes
