"""``run_recbole_dr.py tokenize``: Semantic IDs for a converted dataset, written where RecBole loads them.

Three inputs, one output:

* ``--text FILE`` (item titles, e.g. ``Beauty_item_text.tsv``): MiniLM embeddings (optional extra) -> RQ-VAE;
* ``--embeddings FILE`` (a ``.pt`` dict ``item token -> vector`` or a ``[n, d]`` tensor with ``--embedding_items``):
  your own content embeddings -> RQ-VAE;
* ``--sids FILE`` (``item_id<TAB>sid``, e.g. the published ``*_reference_sids.tsv``): taken as they are, only
  their collisions resolved.

The result is ``dataset/<name>/<name>.item`` plus ``<name>.sid.json`` (source, settings and the report:
reconstruction loss, codebook usage per level, collision rate before and after).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from recbole_diffureason.sid.rqvae import codebook_usage, collision_rate, train_rqvae, unique_semantic_ids
from recbole_diffureason.sid.table import (
    SIDTableError,
    check_coverage,
    dataset_item_tokens,
    read_sid_tsv,
    write_sid_files,
)
from recbole_diffureason.sid.text import TEXT_MODEL, Encoder, embed_items, minilm_encoder, read_item_text


class TokenizeError(ValueError):
    """Bad input to ``tokenize``: the message says what is wrong and how to fix it."""


def dataset_folder(data_path: Path, dataset: str) -> Path:
    folder = Path(data_path) / dataset
    if not (folder / f"{dataset}.inter").is_file():
        raise TokenizeError(f"Dataset '{dataset}' is not converted: '{folder / (dataset + '.inter')}' does not exist. "
                            f"Run 'run_recbole_dr.py convert --input <file> --name {dataset}' first.")
    return folder


def load_embeddings(path: Path, items: Sequence[str], embedding_items: Optional[Path] = None) -> torch.Tensor:
    """Embeddings of ``items`` from a ``.pt`` file: a dict ``token -> vector``, or a ``[n, d]`` tensor whose rows
    follow the tokens listed one per line in ``embedding_items``."""
    path = Path(path)
    if not path.is_file():
        raise TokenizeError(f"Embeddings file '{path}' does not exist.")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle of arbitrary objects, or not a torch file at all
        raise TokenizeError(f"'{path}' is not a torch file of tensors ({type(err).__name__}).") from None
    if isinstance(data, torch.Tensor):
        if embedding_items is None:
            raise TokenizeError(f"'{path}' holds a bare tensor: pass --embedding_items=<file> with one item token per row.")
        tokens = [t.strip() for t in Path(embedding_items).read_text(encoding="utf-8").splitlines() if t.strip()]
        if len(tokens) != data.size(0):
            raise TokenizeError(f"'{embedding_items}' lists {len(tokens)} tokens for {data.size(0)} embedding rows.")
        data = dict(zip(tokens, data))
    if not isinstance(data, dict):
        raise TokenizeError(f"'{path}' must hold a dict item token -> vector or a [n, d] tensor.")
    missing = [i for i in items if i not in data]
    if missing:
        raise TokenizeError(f"'{path}' has no embedding for {len(missing)} items (e.g. {', '.join(missing[:5])}).")
    return torch.stack([torch.as_tensor(data[i]).float().view(-1) for i in items])


def tokenize(
    dataset: str,
    data_path: Path = Path("dataset"),
    text: Optional[Path] = None,
    embeddings: Optional[Path] = None,
    embedding_items: Optional[Path] = None,
    sids: Optional[Path] = None,
    levels: int = 4,
    codebook_size: int = 256,
    hidden_dims: Sequence[int] = (512, 256, 128),
    latent_dim: int = 32,
    epochs: int = 2000,
    batch_size: int = 1024,
    learning_rate: float = 1e-3,
    seed: int = 2020,
    encoder: Optional[Encoder] = None,
    device: Optional[str] = None,
) -> Dict[str, Any]:
    """Write the SIDs of ``dataset`` and return the metadata written beside them (``source``, ``report``, ...)."""
    given = [name for name, value in (("--text", text), ("--embeddings", embeddings), ("--sids", sids)) if value]
    if len(given) != 1:
        raise TokenizeError("Give exactly one SID source: --text=<item text TSV>, --embeddings=<file.pt> or "
                            f"--sids=<item_id<TAB>sid file>; got {', '.join(given) or 'none'}.")
    for name, value in (("levels", levels), ("codebook_size", codebook_size), ("epochs", epochs),
                        ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise TokenizeError(f"--{name} must be a positive integer, got {value!r}.")
    folder = dataset_folder(Path(data_path), dataset)
    items = dataset_item_tokens(folder / f"{dataset}.inter")
    start = time.time()
    if sids:
        meta = _from_reference(Path(sids), items, codebook_size)
    else:
        if text:
            vectors = embed_items(read_item_text(Path(text)), items, encoder or minilm_encoder(device=device))
            source = {"kind": "rqvae", "input": f"item text ({Path(text).name})", "text_model": TEXT_MODEL}
        else:
            vectors = load_embeddings(Path(embeddings), items, embedding_items)
            source = {"kind": "rqvae", "input": f"embeddings ({Path(embeddings).name})"}
        _, codes, report = train_rqvae(
            vectors, hidden_dims=hidden_dims, latent_dim=latent_dim, levels=levels, codebook_size=codebook_size,
            epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
            device=torch.device(device) if device else None)
        table = {item: tuple(row) for item, row in zip(items, codes.tolist())}
        meta = {"source": source, "table": table, "report": {
            "reconstruction_loss": report.reconstruction_loss, "quantization_loss": report.quantization_loss,
            "codebook_usage": report.codebook_usage, "collision_rate_before": report.collision_rate_before,
            "collision_rate_after": report.collision_rate_after, "lines": report.lines()},
            "settings": {"levels": levels, "codebook_size": codebook_size, "hidden_dims": list(hidden_dims),
                         "latent_dim": latent_dim, "epochs": epochs, "batch_size": batch_size,
                         "learning_rate": learning_rate, "seed": seed}}
    table = meta.pop("table")
    meta.update(dataset=dataset, items=len(items), levels=len(next(iter(table.values()))),
                codebook_size=codebook_size if not sids else meta["codebook_size"], seconds=time.time() - start)
    meta["item_file"] = str(write_sid_files(folder, dataset, table, meta))
    return meta


def _from_reference(path: Path, items: List[str], codebook_size: int) -> Dict[str, Any]:
    try:
        reference = read_sid_tsv(path)
        check_coverage(reference, items, f"'{path}'")
    except SIDTableError as err:
        raise TokenizeError(str(err)) from None
    codes = torch.tensor([reference[i] for i in items])
    size = max(codebook_size, int(codes.max()) + 1)
    # No embeddings come with published SIDs: a colliding item takes the lowest free last-level code.
    unique = unique_semantic_ids(codes, torch.zeros(len(items), size))
    report = {"codebook_usage": codebook_usage(codes, size), "collision_rate_before": collision_rate(codes),
              "collision_rate_after": collision_rate(unique)}
    report["lines"] = [
        "codebook usage: " + ", ".join(f"level {i + 1}: {u:.1%}" for i, u in enumerate(report["codebook_usage"])),
        f"collision rate: {report['collision_rate_before']:.2%} before, {report['collision_rate_after']:.2%} after "
        "collision handling"]
    return {"source": {"kind": "reference", "input": path.name}, "codebook_size": size, "report": report,
            "table": {item: tuple(row) for item, row in zip(items, unique.tolist())}}
