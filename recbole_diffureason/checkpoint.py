"""Checkpoint format: plain Python containers and tensors only, readable with ``weights_only=True``.

RecBole 1.2.1 pickles its ``Config`` object and saves with pickle protocol 4; torch>=2.6 refuses both
under ``weights_only=True``. Our files hold ``config.plain_dict()`` instead and use the default protocol.

A checkpoint also records a fingerprint of the data it was trained on (``dataset_fingerprint``): the weights
index items by RecBole's internal ids, which come from the atomic files, so the same file loaded against
re-converted data would score other items without any error. Loading, serving and resuming compare it.
"""

from __future__ import annotations

import enum
import hashlib
import os
import pickle
import random
from logging import getLogger
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
from recbole.utils import EvaluatorType, InputType, ModelType

# 2: adds ``dataset_fingerprint``. Version 1 files still load; their data cannot be checked (a warning says so).
FORMAT_VERSION = 2
# What every checkpoint of this plugin holds, and what a ``*-last.pth`` resume file adds.
REQUIRED_KEYS = ("format_version", "config_dict", "state_dict")
RESUME_KEYS = ("epoch", "stage_index", "cur_step", "best_valid_score", "optimizer", "rng", "history")
# Keys that may change between a run and its resumed continuation: where files go, how the run is shown, on
# which device and rank it runs, and how long it trains (``epochs`` and every ``*_epochs``). Every other key
# changes what an epoch computes, so a checkpoint written with another value is not the same run.
RESUME_FREE_KEYS = frozenset({
    "epochs", "stopping_step", "resume", "saved_model_file", "checkpoint_dir", "results_file", "data_path",
    "show_progress", "state", "verbose", "device", "gpu_id", "use_gpu", "local_rank", "offset", "ip", "port",
    "single_spec", "ddp_backend", "config_files", "worker", "log_wandb", "wandb_project", "tensorboard",
    "detect_anomaly", "check_finite", "allow_download", "save_dataset", "dataset_save_path", "save_dataloaders",
    "dataloaders_save_path", "loss_decimal_place", "metric_decimal_place",
    # Selectors: they only set other keys, and those are compared one by one (a preset renamed, same keys).
    "preset", "ablation",
})
# Keys added after runs were written, each with the value that computes what those runs computed: a checkpoint
# without the key resumes under that value (any other value is a different configuration).
KEYS_ADDED_LATER: Dict[str, Any] = {
    "thought_rec_weight": 0.0,  # 2026-12-07: CE on the later thoughts; 0 is the loss every earlier run had
    "think_output": "direct",  # 2026-12-07: residual thoughts; direct is what every earlier run computed
}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: empty, truncated, foreign, or written for other data or config."""
_ENUMS = {cls.__name__: cls for cls in (ModelType, InputType, EvaluatorType)}


def to_plain(value: Any) -> Any:
    """Turn Enums, devices, numpy scalars and sets into values the weights-only unpickler accepts."""
    if isinstance(value, enum.Enum):
        return {"__enum__": type(value).__name__, "name": value.name}
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return [to_plain(v) for v in value]
    if isinstance(value, (list, tuple)):
        return type(value)(to_plain(v) for v in value)
    return value


def from_plain(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__enum__", "name"} and value["__enum__"] in _ENUMS:
            return _ENUMS[value["__enum__"]][value["name"]]
        return {k: from_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_plain(v) for v in value]
    return value


def save(payload: Dict[str, Any], path: os.PathLike) -> None:
    """Write atomically, so an interrupted run never leaves a half-written file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format_version": FORMAT_VERSION, **payload}, tmp)
    os.replace(tmp, path)


def written_by(state: Mapping[str, Any]) -> str:
    """The model that wrote a checkpoint loaded by :func:`load`."""
    return str(state.get("model_class", state["config_dict"].get("model")))


def load(path: os.PathLike, map_location: Any = "cpu", resume: bool = False, mmap: bool = False) -> Dict[str, Any]:
    """Read one of our checkpoints safely; ``resume=True`` also requires the training state of a ``*-last.pth``.

    Raises ``FileNotFoundError`` for a missing file and ``CheckpointError`` (one sentence on what is wrong and
    what to do) for an empty, truncated, unsafe or foreign one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint '{path}' does not exist.")
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"Checkpoint '{path}' is empty (0 bytes): whatever wrote it stopped before writing anything. "
            "Delete it and train again (our runs write checkpoints atomically, so this file is not one of theirs)."
        )
    with open(path, "rb") as f:
        head = f.read(4)
    zipped = head == b"PK\x03\x04"  # torch files are zip archives (old ones: a pickle, opcode 0x80 first)
    if not zipped and head[:1] != b"\x80":
        raise CheckpointError(
            f"'{path}' is not a torch checkpoint (it starts with {head!r}). Pass a .pth file written by a run "
            "of this plugin (saved/<model>-<time>.pth)."
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap and zipped)
    except pickle.UnpicklingError as err:  # a pickled object the safe loader refuses: RecBole's own files
        raise CheckpointError(
            f"Cannot load '{path}' safely ({type(err).__name__}: {str(err).splitlines()[0]}). "
            "It was not written by recbole-diffureason; RecBole's own checkpoints need "
            "torch.load(..., weights_only=False), which is only safe for files you trust."
        ) from None
    except Exception as err:  # torch raises RuntimeError, EOFError, KeyError... for bytes it cannot parse
        raise CheckpointError(
            f"Checkpoint '{path}' is truncated or corrupt: it starts like a torch file but cannot be read to the "
            f"end ({type(err).__name__}: {(str(err).splitlines() or [''])[0][:120]}). Use another checkpoint of "
            "the run (its best '<name>.pth' or '<name>-last.pth') or train again."
        ) from None
    _check_structure(state, path, resume)
    return state


def _check_structure(state: Any, path: Path, resume: bool) -> None:
    if not isinstance(state, dict) or not all(k in state for k in REQUIRED_KEYS):
        holds = (f"a dict with keys {sorted(map(str, state))[:6]}" if isinstance(state, dict)
                 else f"a {type(state).__name__}")
        raise CheckpointError(
            f"'{path}' is a torch file but not a recbole-diffureason checkpoint: it holds {holds}, without "
            f"{', '.join(repr(k) for k in REQUIRED_KEYS)}. Pass a .pth file written by a run of this plugin "
            "(saved/<model>-<time>.pth)."
        )
    version = state["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint '{path}' has format version {version!r}, newer than this recbole-diffureason reads "
            f"({FORMAT_VERSION}): upgrade the package."
        )
    config = state["config_dict"]
    if not isinstance(config, dict) or not config.get("model") or not config.get("dataset"):
        raise CheckpointError(f"Checkpoint '{path}' holds no model and dataset name in its config: it is damaged.")
    missing = [k for k in RESUME_KEYS if k not in state]
    if resume and missing:
        raise CheckpointError(
            f"'{path}' cannot resume a run: it lacks the training state ({', '.join(missing)}) that a "
            "'<name>-last.pth' file holds. Resume from the run's -last.pth file."
        )


# ---------------------------------------------------------------------- data fingerprint
_ATOMIC_SUFFIXES = ("inter", "user", "item", "kg", "link", "net")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256_tokens(tokens) -> str:
    return hashlib.sha256("\n".join(map(str, tokens)).encode("utf-8")).hexdigest()


def dataset_fingerprint(dataset) -> Dict[str, Any]:
    """What a checkpoint's weights depend on in ``dataset`` (a RecBole ``Dataset``, or a split of it).

    The hash of every atomic file RecBole reads for it, the user and item counts, and a hash of the user and
    item tokens in internal-id order (the mapping the embeddings are indexed by, after filtering).
    """
    config = dataset.config
    fingerprint = {"dataset": config["dataset"], "files": atomic_file_hashes(config)}
    for kind, field in (("items", dataset.iid_field), ("users", dataset.uid_field)):
        if field is not None and field in dataset.field2id_token:
            fingerprint[f"n_{kind}"] = int(dataset.num(field))
            fingerprint[f"{kind[:-1]}_tokens_sha256"] = _sha256_tokens(dataset.field2id_token[field])
    return fingerprint


def atomic_file_hashes(config) -> Dict[str, str]:
    """sha256 of every atomic file RecBole reads for the configured dataset, by file name."""
    name, folder = config["dataset"], Path(config["data_path"])
    suffixes = list(_ATOMIC_SUFFIXES) + list(config["additional_feat_suffix"] or [])
    suffixes += [f"{part}.inter" for part in (config["benchmark_filename"] or [])]
    return {f"{name}.{suffix}": _sha256_file(folder / f"{name}.{suffix}")
            for suffix in suffixes if (folder / f"{name}.{suffix}").is_file()}


def check_files(state: Mapping[str, Any], config, path: os.PathLike) -> None:
    """The part of :func:`check_fingerprint` that needs no loaded data: the atomic files' hashes. Called before
    anything is written (no log file), so a re-converted dataset is refused at once."""
    stored = state.get("dataset_fingerprint")
    if stored is not None:
        current = {"dataset": config["dataset"], "files": atomic_file_hashes(config)}
        check_fingerprint(state, {**stored, **current}, path)


def fingerprint_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> List[str]:
    """Readable differences between two fingerprints (empty when they match)."""
    found = []
    for file in sorted(set(stored.get("files", {})) | set(current.get("files", {}))):
        before, now = stored.get("files", {}).get(file), current.get("files", {}).get(file)
        if before != now:
            found.append(f"{file} " + ("is new" if before is None else "is gone" if now is None
                                        else f"changed (sha256 {before[:12]} -> {now[:12]})"))
    for kind in ("items", "users"):
        before, now = stored.get(f"n_{kind}"), current.get(f"n_{kind}")
        if before != now:
            found.append(f"{before} {kind} then, {now} now")
        elif stored.get(f"{kind[:-1]}_tokens_sha256") != current.get(f"{kind[:-1]}_tokens_sha256"):
            found.append(f"the {kind[:-1]} ids map to other internal ids")
    return found


def check_fingerprint(state: Mapping[str, Any], current: Mapping[str, Any], path: os.PathLike) -> None:
    """Raise ``CheckpointError`` when ``state`` was trained on other data than ``current`` describes."""
    stored = state.get("dataset_fingerprint")
    if stored is None:
        getLogger().warning(f"Checkpoint '{path}' records no data fingerprint (written by an older version): "
                            "cannot check that it was trained on this data.")
        return
    differences = fingerprint_differences(stored, current)
    if differences:
        trained_on = state["config_dict"].get("data_path")
        raise CheckpointError(
            f"Checkpoint '{path}' was trained on other data than dataset '{current.get('dataset')}' holds now: "
            f"{'; '.join(differences)}. Its weights index items by that data's ids, so its scores would go to "
            f"other items. Point data_path at the data it was trained on (it was '{trained_on}') or train a new "
            "model on the current data."
        )


def check_weights_fit(state: Mapping[str, Any], model: torch.nn.Module, path: os.PathLike) -> None:
    """Raise ``CheckpointError`` naming the first weights whose shapes differ, instead of torch's
    ``load_state_dict`` traceback: the file was trained on other data (item count) or another configuration."""
    own = model.state_dict()
    for name, tensor in state["state_dict"].items():
        if name in own and tuple(own[name].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"Checkpoint '{path}' does not fit model {state['config_dict'].get('model')} as configured now: "
                f"'{name}' has shape {list(tensor.shape)} in the file and {list(own[name].shape)} here. It was "
                "trained on other data (another item or user count) or with other sizes (e.g. hidden_size)."
            )


# ---------------------------------------------------------------------- resume
def config_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> List[str]:
    """``key: stored -> current`` for every key that changes what training computes (not ``RESUME_FREE_KEYS``)."""
    found = []
    for key in sorted(set(stored) | set(current), key=str):
        if key in RESUME_FREE_KEYS or str(key).endswith("_epochs"):
            continue
        if key not in stored and key in KEYS_ADDED_LATER:
            before = KEYS_ADDED_LATER[key]
        else:
            before = to_plain(stored.get(key))
        now = to_plain(current.get(key))
        try:
            same = bool(before == now)
        except Exception:  # tensors and other values without a plain truth value
            same = repr(before) == repr(now)
        if not same:
            found.append(f"{key}: {before!r} -> {now!r}")
    return found


def best_checkpoint_path(last_path: os.PathLike) -> str:
    """``x-last.pth`` -> ``x.pth``: the best-weights file of the run that wrote a resume file."""
    path = Path(last_path)
    return str(path.with_name(path.stem[: -len("-last")] + path.suffix))


def find_resumable(
    directory: os.PathLike, config: Mapping[str, Any], fingerprint: Mapping[str, Any]
) -> Tuple[Optional[Path], List[str]]:
    """The newest ``*-last.pth`` in ``directory`` of the same model, dataset, configuration and data.

    Returns the file (or ``None``) and one note per file of the same model and dataset that was passed over,
    saying why, so that "nothing to resume" can be explained.
    """
    folder = Path(directory)
    files = [p for p in folder.glob("*-last.pth") if p.is_file()] if folder.is_dir() else []
    files.sort(key=lambda p: (p.stat().st_mtime, p.name), reverse=True)
    notes = []
    for path in files:
        try:
            state = load(path, resume=True, mmap=True)  # mmap: reading the config does not read the weights
        except (CheckpointError, OSError) as err:
            notes.append(f"{path.name}: unreadable ({str(err).replace(str(path), path.name).split('. ')[0]})")
            continue
        stored = state["config_dict"]
        if (str(stored["model"]).lower(), stored["dataset"]) != (str(config["model"]).lower(), config["dataset"]):
            continue
        differences = config_differences(stored, config)
        if differences:
            notes.append(f"{path.name}: other configuration ({'; '.join(differences[:3])})")
            continue
        data = fingerprint_differences(state.get("dataset_fingerprint") or fingerprint, fingerprint)
        if data:
            notes.append(f"{path.name}: trained on other data ({'; '.join(data[:2])})")
            continue
        return path, notes
    return None, notes


def rng_state() -> Dict[str, Any]:
    """Every random state a RecBole run draws from, in weights-only-safe form."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
