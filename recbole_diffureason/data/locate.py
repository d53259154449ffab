"""Where datasets live, and what to tell the user when one is missing."""

from __future__ import annotations

from pathlib import Path
from typing import List

import recbole
import yaml

EMBEDDED_DATASET = "ml-100k"  # ships inside the recbole wheel (recbole/dataset_example/ml-100k)

# Datasets this plugin's protocol files describe, and how to create them from public files.
CONVERTIBLE = {
    "Amazon_Beauty": "--format text --input <path>/Beauty.txt (the SASRec-style 'user item item ...' file)",
    "Amazon_Instruments": "--format lcrec --input <path>/Instruments.inter.json (the LC-Rec JSON file)",
}


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's atomic files are not where RecBole will look for them."""


def recbole_downloadable() -> List[str]:
    url_file = Path(recbole.__file__).resolve().parent / "properties" / "dataset" / "url.yaml"
    with open(url_file, "r", encoding="utf-8") as f:
        return sorted((yaml.safe_load(f) or {}).keys())


def local_datasets(data_root: Path) -> List[str]:
    if not data_root.is_dir():
        return []
    return sorted(p.name for p in data_root.iterdir() if (p / f"{p.name}.inter").is_file())


def check_dataset(config) -> None:
    """Raise ``DatasetNotFoundError`` with instructions unless RecBole can load ``config['dataset']``."""
    name = config["dataset"]
    if name == EMBEDDED_DATASET:
        return
    folder = Path(config["data_path"])  # RecBole has already joined data_path and the dataset name
    if (folder / f"{name}.inter").is_file():
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
