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
from typing import Dict, List, Tuple

from recbole.trainer import Trainer
from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_diffureason import model as model_package
from recbole_diffureason import trainer as trainer_module
from recbole_diffureason.model.abstract import ReasoningRecommender

_RECBOLE_MODEL_PACKAGES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)


class UnknownModelError(ValueError):
    """The requested model is neither a plugin model nor a RecBole built-in."""


@lru_cache(maxsize=1)
def plugin_models() -> Dict[str, type]:
    """``name -> class`` of every model in ``recbole_diffureason/model/``, found as RecBole finds its own.

    One model per module, as in RecBole: module ``rearec_erl`` holds class ``ReaRecERL`` (the class name,
    lower-cased, is the module name without underscores). Base classes say ``abstract = True`` in their body.
    """
    found = {}
    for info in pkgutil.iter_modules(model_package.__path__):
        module = importlib.import_module(f"{model_package.__name__}.{info.name}")
        for name, value in vars(module).items():
            if (isinstance(value, type) and issubclass(value, ReasoningRecommender)
                    and value.__module__ == module.__name__ and not vars(value).get("abstract", False)
                    and name.lower() == info.name.replace("_", "")):
                found[name] = value
    return found


def plugin_model_names() -> List[str]:
    return sorted(plugin_models())


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
    return name in plugin_models()


def get_model(name: str) -> type:
    """Return the model class for ``name``: a plugin model, else a RecBole built-in."""
    if not isinstance(name, str) or not name:
        raise UnknownModelError(f"A model name is required, got {name!r}.")
    if name in plugin_models():
        return plugin_models()[name]
    try:
        return recbole_get_model(name)
    except (ValueError, AttributeError, ImportError):  # RecBole's last resort imports lightgbm/xgboost
        raise UnknownModelError(unknown_model_message(name)) from None


def unknown_model_message(name: str) -> str:
    """One line: the unknown name, close matches, and every model that exists."""
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
    if base is Trainer:
        return trainer_module.DRTrainer
    return type(f"DR{base.__name__}", (trainer_module.DRTrainerMixin, base, trainer_module.DistributedInit), {})


def get_trainer(model_type, model_name: str) -> type:
    """Trainer class for a model: ``<Name>Trainer`` of this plugin, else RecBole's, made checkpoint-safe."""
    own = vars(trainer_module).get(f"{model_name}Trainer")
    if own is not None:
        return own
    if is_plugin_model(model_name):
        return trainer_module.DRTrainer
    base = recbole_get_trainer(model_type, model_name)
    if issubclass(base, Trainer):
        return _safe_trainer_class(base)
    return base  # RecBole's tree-model trainers manage their own files
