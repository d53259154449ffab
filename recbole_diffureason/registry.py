"""Model and trainer lookup: this plugin's models first, then RecBole's own zoo.

Only this module and ``config.py`` know how RecBole resolves names. Everything that builds a model or a
trainer (the CLI, ``quick_start.run``, hyper-parameter objectives, ``load_data_and_model``) goes through
``get_model`` and ``get_trainer`` here, so plugin models and RecBole built-ins run through the same code.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from functools import lru_cache
from typing import List, Tuple

from recbole.trainer import Trainer
from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

# name -> module; one model per module, as in RecBole.
_PLUGIN_MODELS = {
    "DiffuReasonSASRec": "recbole_diffureason.model.diffureason_sasrec",
    "LARES": "recbole_diffureason.model.lares",
    "ReaRecERL": "recbole_diffureason.model.rearec_erl",
    "ReaRecPRL": "recbole_diffureason.model.rearec_prl",
}

_RECBOLE_MODEL_PACKAGES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)


class UnknownModelError(ValueError):
    """The requested model is neither a plugin model nor a RecBole built-in."""


def plugin_model_names() -> List[str]:
    return sorted(_PLUGIN_MODELS)


@lru_cache(maxsize=1)
def recbole_model_names() -> Tuple[str, ...]:
    """Class names of RecBole's built-in models, found the way RecBole's ``get_model`` finds them."""
    names = []
    for package in _RECBOLE_MODEL_PACKAGES:
        try:
            pkg = importlib.import_module(f"recbole.model.{package}")
        except Exception:  # pragma: no cover - an optional library of exlib may be missing
            continue
        for info in pkgutil.iter_modules(pkg.__path__):
            try:
                module = importlib.import_module(f"recbole.model.{package}.{info.name}")
            except Exception:  # pragma: no cover
                continue
            names += [n for n in dir(module) if n.lower() == info.name and isinstance(getattr(module, n), type)]
    return tuple(sorted(set(names)))


def list_models() -> dict:
    """``{"plugin": [...], "recbole": [...]}``: every name ``--model`` accepts."""
    return {"plugin": plugin_model_names(), "recbole": list(recbole_model_names())}


def is_plugin_model(name: str) -> bool:
    return name in _PLUGIN_MODELS


def get_model(name: str) -> type:
    """Return the model class for ``name``: a plugin model, else a RecBole built-in."""
    if not isinstance(name, str) or not name:
        raise UnknownModelError(f"A model name is required, got {name!r}.")
    if name in _PLUGIN_MODELS:
        return getattr(importlib.import_module(_PLUGIN_MODELS[name]), name)
    try:
        return recbole_get_model(name)
    except (ValueError, AttributeError, ImportError):  # RecBole's last resort imports lightgbm/xgboost
        raise UnknownModelError(_unknown_model_message(name)) from None


def _unknown_model_message(name: str) -> str:
    everything = plugin_model_names() + list(recbole_model_names())
    close = difflib.get_close_matches(name, everything, n=3, cutoff=0.6)
    close += [n for n in everything if n.lower() == name.lower() and n not in close]
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return (
        f"Unknown model '{name}'.{hint} Plugin models: {', '.join(plugin_model_names())}. "
        f"RecBole models: {', '.join(recbole_model_names())}."
    )


@lru_cache(maxsize=None)
def _safe_trainer_class(base: type) -> type:
    """``base`` with this plugin's checkpoint, resume and logging behaviour mixed in front of it."""
    from recbole_diffureason.trainer import DistributedInit, DRTrainer, DRTrainerMixin

    if base is Trainer:
        return DRTrainer
    return type(f"DR{base.__name__}", (DRTrainerMixin, base, DistributedInit), {})


def get_trainer(model_type, model_name: str) -> type:
    """Trainer class for a model: ``<Name>Trainer`` of this plugin, else RecBole's, made checkpoint-safe."""
    trainer_module = importlib.import_module("recbole_diffureason.trainer")
    own = getattr(trainer_module, f"{model_name}Trainer", None)
    if own is not None:
        return own
    if is_plugin_model(model_name):
        return trainer_module.DRTrainer
    base = recbole_get_trainer(model_type, model_name)
    if issubclass(base, Trainer):
        return _safe_trainer_class(base)
    return base  # RecBole's tree-model trainers manage their own files
