"""Where datasets live, and what to tell the user when one is missing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import recbole
import yaml
from recbole.utils import ModelType

from recbole_diffureason.keys import ConfigError

EMBEDDED_DATASET = "ml-100k"  # ships inside the recbole wheel (recbole/dataset_example/ml-100k)
_RECBOLE_DIR = Path(recbole.__file__).resolve().parent

# Datasets this plugin's protocol files describe, and how to create them from public files.
CONVERTIBLE = {
    "Amazon_Beauty": "--format text --input <path>/Beauty.txt (the SASRec-style 'user item item ...' file)",
    "Amazon_Instruments": "--format lcrec --input <path>/Instruments.inter.json (the LC-Rec JSON file)",
}


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's atomic files are not where RecBole will look for them."""


class DatasetFieldError(ConfigError):
    """The dataset's files or loaded columns lack a field the model or the split needs."""


def recbole_reserved_names() -> Dict[str, str]:
    """Dataset names RecBole resolves to its own files, with what it does: a converted dataset of that name
    would silently never be read (``Config._set_default_parameters`` points ml-100k's ``data_path`` at the wheel;
    ``Config._load_internal_config_dict`` loads ``properties/dataset/<name>.yaml`` for any name)."""
    reserved = {}
    for yaml_file in sorted((_RECBOLE_DIR / "properties" / "dataset").glob("*.yaml")):
        reserved[yaml_file.stem] = f"it loads its own properties/dataset/{yaml_file.name} as that dataset's settings"
    for folder in sorted((_RECBOLE_DIR / "dataset_example").iterdir()):
        if folder.is_dir():
            reserved[folder.name] = (f"it always reads its embedded copy (recbole/dataset_example/{folder.name}), "
                                     "whatever data_path says")
    return reserved


def recbole_downloadable() -> List[str]:
    url_file = Path(recbole.__file__).resolve().parent / "properties" / "dataset" / "url.yaml"
    with open(url_file, "r", encoding="utf-8") as f:
        return sorted((yaml.safe_load(f) or {}).keys())


def local_datasets(data_root: Path) -> List[str]:
    if not data_root.is_dir():
        return []
    return sorted(p.name for p in data_root.iterdir() if (p / f"{p.name}.inter").is_file())


def _value(config, key: str) -> Any:
    """``config[key]``, or ``None`` when absent (RecBole's ``Config`` and plain dicts alike)."""
    return config[key] if key in config else None


def check_dataset(config) -> None:
    """Raise ``DatasetNotFoundError`` with instructions unless RecBole can load ``config['dataset']``, and
    ``DatasetFieldError`` when it would load it without the time field the model or the split orders by."""
    name = config["dataset"]
    if name == EMBEDDED_DATASET:
        return
    folder = Path(config["data_path"])  # RecBole has already joined data_path and the dataset name
    if (folder / f"{name}.inter").is_file():
        check_time_field(config, folder / f"{name}.inter")
        return
    downloadable = name in recbole_downloadable()
    if downloadable and config["allow_download"]:
        return
    data_root = folder.parent
    lines = [f"Dataset '{name}' not found: RecBole looks for '{folder / (name + '.inter')}'."]
    available = local_datasets(data_root)
    lines.append(
        f"Available under '{data_root}': {', '.join(available) if available else 'none'}; "
        f"always available: {EMBEDDED_DATASET} (embedded in RecBole)."
    )
    if name in CONVERTIBLE:
        lines.append(
            f"Create it with: python run_recbole_dr.py convert --name {name} --out {data_root} {CONVERTIBLE[name]}"
        )
    else:
        lines.append(
            f"Convert a public file with: python run_recbole_dr.py convert --name {name} --input <file> "
            f"(formats: 'user item item ...' text lines or LC-Rec JSON), or point --data_path at the folder "
            f"that holds {name}/{name}.inter."
        )
    if downloadable:
        lines.append(f"RecBole can also download '{name}' itself: add --allow_download=True (needs internet).")
    raise DatasetNotFoundError(" ".join(lines))


def _inter_columns(inter_file: Path, separator: str) -> List[str]:
    with open(inter_file, "r", encoding="utf-8", errors="replace") as f:
        header = f.readline().rstrip("\r\n")
    return [column.split(":")[0] for column in header.split(separator or "\t")]


def _reconvert_hint(inter_file: Path, name: str) -> str:
    """The exact ``convert`` command that writes the missing dataset YAML, when the source is on record."""
    stats_file = inter_file.with_suffix(".stats.json")
    source: Optional[Dict[str, Any]] = None
    if stats_file.is_file():
        try:
            source = json.loads(stats_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            source = None
    if source and source.get("source") and source.get("format"):
        return (f"python run_recbole_dr.py convert --input {source['source']} --format {source['format']} "
                f"--name {name} --out {inter_file.parent.parent} --force")
    return f"python run_recbole_dr.py convert --input <source file> --name {name} --out {inter_file.parent.parent} --force"


def check_time_field(config, inter_file: Path) -> None:
    """Sequential models (and any chronological split) sort each user's interactions by ``TIME_FIELD``.

    RecBole only notices a missing one deep inside the dataset code (``ValueError: [timestamp] is not exist in
    interaction``); the usual cause is a converted dataset without its YAML, so RecBole's defaults load only
    ``user_id`` and ``item_id``.
    """
    model_type = _value(config, "MODEL_TYPE")
    eval_args = _value(config, "eval_args") or {}
    sequential = model_type == ModelType.SEQUENTIAL
    if not (sequential or (isinstance(eval_args, dict) and eval_args.get("order") == "TO")):
        return
    name, field = config["dataset"], _value(config, "TIME_FIELD")
    need = (f"model {config['model']} is sequential and orders each user's history by time" if sequential
            else "eval_args order 'TO' splits each user's interactions by time")
    columns = _inter_columns(inter_file, _value(config, "field_separator"))
    if not field:
        raise DatasetFieldError(
            f"Dataset '{name}': {need}, but TIME_FIELD is not set. Set it to the time column of '{inter_file}' "
            f"(columns: {', '.join(columns)}), e.g. --TIME_FIELD=timestamp."
        )
    if field not in columns:
        raise DatasetFieldError(
            f"Dataset '{name}' has no time column '{field}' (columns of '{inter_file}': {', '.join(columns)}), but "
            f"{need}. Add a '{field}:float' column, set --TIME_FIELD to the file's time column, or convert a "
            "'user item item ...' file with run_recbole_dr.py convert (the position becomes the timestamp)."
        )
    load_col, unload_col = _value(config, "load_col"), _value(config, "unload_col")
    inter_cols = load_col.get("inter") if isinstance(load_col, dict) else None
    unloaded = unload_col.get("inter") if isinstance(unload_col, dict) else None
    if (isinstance(load_col, dict) and field not in (inter_cols or [])) or field in (unloaded or []):
        setting = f"unload_col {unload_col}" if field in (unloaded or []) else f"load_col {load_col}"
        yaml_file = inter_file.with_name(f"{name}.yaml")
        raise DatasetFieldError(
            f"Dataset '{name}' has the time column '{field}', but {setting} does not load it, and {need}. "
            f"Write the dataset's YAML ({yaml_file}) with the papers' protocol: {_reconvert_hint(inter_file, name)}; "
            f"or load the column: --load_col=\"{{'inter': {list(inter_cols or []) + [field]}}}\"."
        )


def empty_after_filtering(config) -> DatasetFieldError:
    """RecBole's ``ValueError: Some feat is empty`` said in terms of the settings that emptied the dataset."""
    settings = {key: _value(config, key) for key in
                ("user_inter_num_interval", "item_inter_num_interval", "val_interval", "rm_dup_inter")}
    shown = ", ".join(f"{key}={value!r}" for key, value in settings.items() if value not in (None, "[0,inf)"))
    return DatasetFieldError(
        f"Dataset '{config['dataset']}' is empty after RecBole's filtering ({shown or 'no filter set'}): no user or "
        "item keeps enough interactions. Lower the filter, e.g. --user_inter_num_interval=\"[1,inf)\" "
        "--item_inter_num_interval=\"[1,inf)\", or convert the data again with --min_inter 1 --force."
    )
