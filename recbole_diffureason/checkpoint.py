"""Checkpoint format: plain Python containers and tensors only, readable with ``weights_only=True``.

RecBole 1.2.1 pickles its ``Config`` object and saves with pickle protocol 4; torch>=2.6 refuses both
under ``weights_only=True``. Our files hold ``config.plain_dict()`` instead and use the default protocol.
"""

from __future__ import annotations

import enum
import os
import random
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch
from recbole.utils import EvaluatorType, InputType, ModelType

FORMAT_VERSION = 1
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


def load(path: os.PathLike, map_location: Any = "cpu") -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint '{path}' does not exist.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # an unsafe legacy RecBole file, or a corrupt one
        raise ValueError(
            f"Cannot load '{path}' safely ({type(err).__name__}: {str(err).splitlines()[0]}). "
            "It was not written by recbole-diffureason; RecBole's own checkpoints need "
            "torch.load(..., weights_only=False), which is only safe for files you trust."
        ) from None


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
