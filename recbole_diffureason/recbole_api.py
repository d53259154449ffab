"""RecBole's own API for this plugin's models: ``get_model``, ``run_recbole``, ``load_data_and_model``.

After ``import recbole_diffureason``, RecBole's functions work with plugin models and with the checkpoints this
plugin writes. This is registration, not a change of RecBole's behaviour: RecBole resolves models, trainers
and configs through a few module-level names, and ``register()`` puts a lookup in front of each one that
answers for plugin models and hands every other name to RecBole's original, unchanged:

* ``get_model`` (``recbole.utils``, ``recbole.utils.utils``, and the names ``recbole.quick_start.quick_start`` and
  ``recbole.config.configurator`` imported): plugin names resolve to the plugin's classes. RecBole's own
  lookup ends by importing ``exlib_recommender``, so a plugin name (or a typo) used to fail with a misleading
  ``ModuleNotFoundError: lightgbm``; an unknown name now gets RecBole's ``ValueError`` with the list of models.
* ``get_trainer``: plugin models get this plugin's trainer (``registry.get_trainer``), whose checkpoints load
  with ``torch.load(..., weights_only=True)``.
* ``Config`` as ``recbole.quick_start.quick_start`` sees it: a plugin model gets ``DRConfig`` (its YAML defaults
  and key checks; RecBole's ``Config`` only knows RecBole's YAML files), and its ``detect_anomaly`` key is applied.
* ``get_flops`` as ``recbole.quick_start.quick_start`` sees it: for plugin models the guarded count of
  ``runlog.log_flops`` (never crashes, leaves the seeded RNG streams alone).
* ``load_data_and_model`` (``recbole.quick_start`` and ``recbole.quick_start.quick_start``): a file written
  by this plugin (a plain dict with ``config_dict``, readable with ``weights_only=True``) is rebuilt by
  ``quick_start.load_data_and_model``; any other file goes to RecBole's own function.

So ``recbole.quick_start.run_recbole(model="DiffuReasonSASRec", ...)`` runs RecBole's own ``run_recbole`` body
with ``DRConfig`` and ``DRTrainer``: the same numbers as ``recbole_diffureason.run`` and a checkpoint that
``load_data_and_model`` (RecBole's or ours) reads. Nothing is unpickled anywhere.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import recbole

from recbole_diffureason import registry

_MARK = "__recbole_diffureason_original__"

# Modules that bound RecBole's lookups by name at import time; each name is registered in all of them.
_GET_MODEL_USERS = ("recbole.utils", "recbole.utils.utils", "recbole.quick_start.quick_start",
                    "recbole.config.configurator")
_GET_TRAINER_USERS = ("recbole.utils", "recbole.utils.utils", "recbole.quick_start.quick_start")
_LOAD_USERS = ("recbole.quick_start", "recbole.quick_start.quick_start")
_QUICK_START = "recbole.quick_start.quick_start"


def _original(function: Callable) -> Callable:
    return getattr(function, _MARK, function)


def _model_name(model: Any) -> Optional[str]:
    return model if isinstance(model, str) else getattr(model, "__name__", None)


def _is_plugin(model: Any) -> bool:
    name = _model_name(model)
    return bool(name) and registry.is_plugin_model(name)


def _exlib_module_exists(name: str) -> bool:
    """RecBole's tree models (lightgbm, xgboost) need optional libraries; their import errors are real ones."""
    return (Path(recbole.__file__).parent / "model" / "exlib_recommender" / f"{name.lower()}.py").is_file()


def make_get_model(original: Callable) -> Callable:
    def get_model(model_name):
        if _is_plugin(model_name):
            return registry.plugin_models()[model_name]
        try:
            return original(model_name)
        except ImportError:
            if isinstance(model_name, str) and _exlib_module_exists(model_name):
                raise
            # A ValueError, as RecBole raises for names it does not know, with the list of what exists.
            raise registry.UnknownModelError(registry.unknown_model_message(str(model_name))) from None

    get_model.__doc__ = "RecBole's ``get_model``; this plugin's models resolve first (recbole_diffureason)."
    setattr(get_model, _MARK, original)
    return get_model


def make_get_trainer(original: Callable) -> Callable:
    def get_trainer(model_type, model_name):
        if _is_plugin(model_name):
            return registry.get_trainer(model_type, model_name)
        return original(model_type, model_name)

    get_trainer.__doc__ = "RecBole's ``get_trainer``; plugin models get their checkpoint-safe trainer."
    setattr(get_trainer, _MARK, original)
    return get_trainer


def requested_model(model: Any = None, config_file_list: Optional[List[str]] = None,
                    config_dict: Optional[Dict[str, Any]] = None, argv: Optional[List[str]] = None) -> Optional[str]:
    """The model a RecBole ``Config`` call will use, with RecBole's precedence: argument, then command line,
    then ``config_dict``, then the last config file that names one."""
    if model is not None:
        return _model_name(model)
    for arg in reversed(sys.argv[1:] if argv is None else argv):
        if arg.startswith("--model="):
            return arg.split("=", 1)[1]
    if config_dict and config_dict.get("model"):
        return _model_name(config_dict["model"])
    from recbole_diffureason.config import read_yaml

    for file in reversed(config_file_list or []):
        try:
            name = read_yaml(file).get("model")
        except Exception:  # RecBole's Config reports a bad file itself
            continue
        if name:
            return _model_name(name)
    return None


def make_config(original: type) -> Callable:
    def Config(model=None, dataset=None, config_file_list=None, config_dict=None):  # noqa: N802 - RecBole's name
        if _is_plugin(requested_model(model, config_file_list, config_dict)):
            from recbole_diffureason.config import DRConfig

            # cmd_args=None: the command line is read as RecBole's Config reads it.
            config = DRConfig(model=model, dataset=dataset, config_file_list=config_file_list,
                              config_dict=config_dict, cmd_args=None)
            # As quick_start.build_model does: RecBole's sine.py switches anomaly detection on at import, which
            # changes no number but slows every backward pass; the `detect_anomaly` key decides.
            import torch

            torch.autograd.set_detect_anomaly(bool(config["detect_anomaly"]))
            return config
        return original(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)

    Config.__doc__ = "RecBole's ``Config``; a plugin model gets ``DRConfig`` (its YAML defaults and key checks)."
    setattr(Config, _MARK, original)
    return Config


def make_get_flops(original: Callable) -> Callable:
    def get_flops(model, dataset, device, logger, transform, verbose=False):
        if _is_plugin(type(model).__name__):
            from recbole_diffureason.runlog import count_flops

            flops = count_flops(model, dataset, device, logger, transform)
            return "n/a" if flops is None else flops
        return original(model, dataset, device, logger, transform, verbose)

    setattr(get_flops, _MARK, original)
    return get_flops


def is_plugin_checkpoint(model_file: Any) -> bool:
    """True for a file this plugin wrote: a plain dict with ``config_dict`` that loads with ``weights_only=True``."""
    import torch

    try:
        state = torch.load(model_file, map_location="cpu", weights_only=True)
    except Exception:  # not a file, or one that needs unpickling: RecBole's own function decides
        return False
    return isinstance(state, dict) and "config_dict" in state and "state_dict" in state


def make_load_data_and_model(original: Callable) -> Callable:
    def load_data_and_model(model_file):
        if is_plugin_checkpoint(model_file):
            from recbole_diffureason.quick_start import load_data_and_model as ours

            return ours(model_file)
        return original(model_file)

    load_data_and_model.__doc__ = ("RecBole's ``load_data_and_model``; checkpoints written by recbole_diffureason "
                                   "are rebuilt safely by ``recbole_diffureason.load_data_and_model``.")
    setattr(load_data_and_model, _MARK, original)
    return load_data_and_model


def _register(modules, name: str, factory: Callable) -> None:
    for module_name in modules:
        module = importlib.import_module(module_name)
        current = getattr(module, name, None)
        if current is not None and not hasattr(current, _MARK):  # idempotent: never wrap a wrapper
            setattr(module, name, factory(current))


def register() -> None:
    """Make RecBole's lookups find this plugin's models and checkpoints (called by ``import recbole_diffureason``)."""
    _register(_GET_MODEL_USERS, "get_model", make_get_model)
    _register(_GET_TRAINER_USERS, "get_trainer", make_get_trainer)
    _register((_QUICK_START,), "Config", make_config)
    _register((_QUICK_START,), "get_flops", make_get_flops)
    _register(_LOAD_USERS, "load_data_and_model", make_load_data_and_model)


def registered() -> bool:
    import recbole.utils

    return hasattr(recbole.utils.get_model, _MARK)
