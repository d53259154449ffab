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
    missing_text: str = "error",
    standardize: bool = True,
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
            texts = read_item_text(Path(text))
            without = sum(1 for i in items if not texts.get(i))
            vectors = embed_items(texts, items, encoder or minilm_encoder(device=device), missing_text)
            source = {"kind": "rqvae", "input": f"item text ({Path(text).name})", "text_model": TEXT_MODEL,
                      "items_without_text": without}
        else:
            vectors = load_embeddings(Path(embeddings), items, embedding_items)
            source = {"kind": "rqvae", "input": f"embeddings ({Path(embeddings).name})"}
        _, codes, report = train_rqvae(
            vectors, hidden_dims=hidden_dims, latent_dim=latent_dim, levels=levels, codebook_size=codebook_size,
            epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
            device=torch.device(device) if device else None, standardize=standardize)
        table = {item: tuple(row) for item, row in zip(items, codes.tolist())}
        meta = {"source": source, "table": table, "report": {
            "reconstruction_loss": report.reconstruction_loss, "quantization_loss": report.quantization_loss,
            "codebook_usage": report.codebook_usage, "collision_rate_before": report.collision_rate_before,
            "collision_rate_after": report.collision_rate_after, "lines": report.lines()},
            "settings": {"levels": levels, "codebook_size": codebook_size, "hidden_dims": list(hidden_dims),
                         "latent_dim": latent_dim, "epochs": epochs, "batch_size": batch_size,
                         "learning_rate": learning_rate, "seed": seed, "standardize": standardize}}
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


def tokenize_parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="run_recbole_dr.py tokenize",
        description="Semantic IDs for a converted dataset, written to dataset/<name>/<name>.item (RecBole item "
        "features) with a provenance record <name>.sid.json. Give one source: item text (RQ-VAE over MiniLM "
        "embeddings; pip install -e \".[sid]\"), your own embeddings (RQ-VAE), or a published SID file.")
    parser.add_argument("--dataset", required=True, help="converted dataset name, e.g. Amazon_Beauty")
    parser.add_argument("--data_path", default="dataset", help="folder that holds <dataset>/ (default: dataset)")
    source = parser.add_argument_group("SID source (exactly one)")
    source.add_argument("--text", default=None, help="TSV with item_id and title_phrase columns")
    source.add_argument("--embeddings", default=None, help=".pt file: dict item token -> vector, or a [n, d] tensor")
    source.add_argument("--embedding_items", default=None, help="with a tensor: item tokens, one per line")
    source.add_argument("--sids", default=None, help="TSV item_id<TAB>sid (space-separated codes), used as given")
    source.add_argument("--missing_text", choices=("error", "empty"), default="error",
                        help="items without text: error (default), or embed an empty text")
    rq = parser.add_argument_group("RQ-VAE (docs/design.md 4.2)")
    rq.add_argument("--levels", type=int, default=4)
    rq.add_argument("--codebook_size", type=int, default=256)
    rq.add_argument("--hidden_dims", default="512,256,128", help="encoder hidden widths, comma-separated")
    rq.add_argument("--latent_dim", type=int, default=32)
    rq.add_argument("--epochs", type=int, default=2000)
    rq.add_argument("--batch_size", type=int, default=1024)
    rq.add_argument("--learning_rate", type=float, default=1e-3)
    rq.add_argument("--seed", type=int, default=2020)
    rq.add_argument("--device", default=None, help="e.g. cuda; default cpu")
    return parser


def tokenize_main(argv: Sequence[str]) -> int:
    """The ``tokenize`` sub-command: exit 0 with the report printed, or 2 with one message on stderr."""
    import json
    import sys

    from recbole_diffureason.sid.text import TextEmbeddingError

    args = tokenize_parser().parse_args(list(argv))
    try:
        dims = tuple(int(x) for x in args.hidden_dims.split(",") if x.strip())
    except ValueError:
        print(f"error: --hidden_dims must be comma-separated integers, got {args.hidden_dims!r}.", file=sys.stderr)
        return 2
    try:
        meta = tokenize(args.dataset, Path(args.data_path), text=args.text and Path(args.text),
                        embeddings=args.embeddings and Path(args.embeddings),
                        embedding_items=args.embedding_items and Path(args.embedding_items),
                        sids=args.sids and Path(args.sids), levels=args.levels, codebook_size=args.codebook_size,
                        hidden_dims=dims, latent_dim=args.latent_dim, epochs=args.epochs,
                        batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed,
                        device=args.device, missing_text=args.missing_text)
    except (TokenizeError, TextEmbeddingError, SIDTableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in meta["report"]["lines"]:
        print(line)
    print(json.dumps({k: meta[k] for k in ("dataset", "items", "levels", "codebook_size", "source", "item_file",
                                           "seconds")}, indent=2))
    return 0
