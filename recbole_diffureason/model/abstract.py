r"""
ReasoningRecommender: the contract between a model of this plugin and ``DRTrainer``
###################################################################################

Every model of this plugin (DiffuReason, ReaRec, LARES, and the Semantic-ID family to come) subclasses
:class:`ReasoningRecommender`, a RecBole ``SequentialRecommender`` with a few more things written down. The
trainer, the config and the registry call these methods directly; each has a safe default, so a model
overrides only what it uses. RecBole's own models run through the same trainer behind
:class:`RecBoleModelContract`, which gives them the defaults.

What a model declares (class attributes, read before any data loads):

* ``loss_names``: one name per element of the tuple ``calculate_loss`` returns; the trainer logs each term
  under its name (RecBole sums the tuple for the backward pass).
* ``config_keys``: ``name -> keys.Key`` validation rules, merged along the MRO; every key also has a default
  with a one-line comment in ``properties/model/<Name>.yaml`` (a test checks the two agree).
* ``presets``: ``{key: {name: {key: value}}}``, named bundles of keys that one key selects. ``strict_presets``
  names the keys whose bundles are experiments (the papers' ablation rows: setting one of their keys to another
  value explicitly is an error); for the others (e.g. ``preset: paper``) explicit keys win. Applied in order.
* ``backbone_name``: a RecBole model whose YAML is layered below ours (e.g. ``SASRec``).
* ``abstract = True`` in a class body: a base class, not a model ``--model`` accepts.

What a model may override (called by the trainer):

* ``training_stages()``: ``[(name, max_epochs), ...]``, one entry per stage run in order by one ``fit`` (default:
  one stage ``train`` for ``epochs``). Each later stage starts from the best checkpoint of the one before, with
  a fresh optimizer at ``stage_learning_rate(name)`` (``None``: RecBole's ``learning_rate``).
* ``set_training_stage(name, resumed)``: entering a stage; ``resumed`` is True when the stage continues from
  a ``-last.pth`` checkpoint, whose state (the frozen reference included) must be kept, not rebuilt.
* ``on_epoch_start(epoch)``: before every training epoch (0-based).
* ``pop_diagnostics()``: per-epoch means of what ``record_diagnostics`` collected, then reset.

Shared machinery (used by the subclasses, never re-implemented):

* a frozen reference policy (``snapshot_reference``, ``reference_call``): saved with every checkpoint through
  RecBole's ``other_parameter``, so a resumed run keeps the reference it had;
* evaluation noise keyed by user id (``keyed_noise``, docs/design.md section 5.6);
* ``evaluating()``: dropout off for a reference or selection pass inside a training step;
* ``init_like_sasrec``: RecBole's SASRec initialisation for the modules a model adds.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_diffureason.keys import Key, apply_preset
from recbole_diffureason.modules.encoders import init_like_sasrec
from recbole_diffureason.modules.noise import keyed_normal, noise_keys


class ReasoningRecommender(SequentialRecommender):
    """Base class of every model of this plugin; see the module docstring for the contract."""

    abstract = True
    input_type = InputType.POINTWISE
    backbone_name: Optional[str] = None
    loss_names: Tuple[str, ...] = ("loss",)
    config_keys: Dict[str, Key] = {}
    presets: Dict[str, Dict[str, Dict[str, Any]]] = {}
    strict_presets: Tuple[str, ...] = ("ablation",)
    # RecBole saves these attributes with the weights; the frozen reference must survive a resume.
    other_parameter_name = ["_reference"]

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.epochs = config["epochs"]
        std = config["initializer_range"]
        self.initializer_range = 0.02 if std is None else float(std)  # RecBole SASRec's default
        self.stage = "train"
        self._reference: Optional[Dict[str, torch.Tensor]] = None
        self._diagnostics: Dict[str, List[float]] = {}

    # ------------------------------------------------------------------ configuration (before data loads)
    @classmethod
    def apply_presets(cls, config: dict, explicit: Mapping[str, Any]) -> None:
        """Set the keys of every preset the config names, in the order of ``presets``."""
        for key, table in cls.presets.items():
            apply_preset(config, explicit, table, key, strict=key in cls.strict_presets)

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> None:
        """Checks that involve several keys; raise ``keys.ConfigError``. Single keys: ``config_keys``."""

    # ------------------------------------------------------------------ training stages and hooks
    def training_stages(self) -> List[Tuple[str, int]]:
        return [("train", self.epochs)]

    def stage_learning_rate(self, stage: str) -> Optional[float]:
        """Learning rate of a stage's fresh optimizer; ``None`` keeps RecBole's ``learning_rate``."""
        return None

    def parameter_groups(self) -> Any:
        """What the optimizer trains: ``self.parameters()``, or torch parameter groups with their own ``lr``."""
        return self.parameters()

    def set_training_stage(self, name: str, resumed: bool = False) -> None:
        self.stage = name

    def on_epoch_start(self, epoch: int) -> None:
        """Called before every training epoch with its 0-based index."""

    # ------------------------------------------------------------------ diagnostics
    def record_diagnostics(self, **values: float) -> None:
        """Keep per-batch values; the trainer logs their per-epoch means."""
        for key, value in values.items():
            self._diagnostics.setdefault(key, []).append(float(value))

    def pop_diagnostics(self) -> Dict[str, float]:
        """Per-epoch means of the recorded diagnostics, then reset."""
        means = {k: sum(v) / len(v) for k, v in self._diagnostics.items() if v}
        self._diagnostics = {}
        return means

    # ------------------------------------------------------------------ frozen reference policy
    def snapshot_reference(self) -> None:
        """Freeze a copy of the current weights as the reference policy ``pi_ref``."""
        self._reference = {k: v.detach().clone() for k, v in self.state_dict().items()}

    @property
    def has_reference(self) -> bool:
        return self._reference is not None

    def reference_weight(self, name: str) -> torch.Tensor:
        """One frozen tensor of the reference (``state_dict`` name)."""
        return self._reference[name]

    @torch.no_grad()
    def reference_call(self, *args, **kwargs):
        """``self.forward(*args, **kwargs)`` with the frozen weights, without dropout and without gradient."""
        with self.evaluating():
            return torch.func.functional_call(self, self._reference, args, kwargs)

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Switch dropout off for a reference or selection pass inside a training step."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------ evaluation noise and init
    def keyed_noise(self, interaction, size: int, seed: int, draw: int = 0, draws: int = 1) -> torch.Tensor:
        """``[B, size]`` standard normal noise keyed by user id (or by the history when there is no user).

        The same user gets the same noise for any batch size, order or number of DDP ranks; ``draw`` in
        ``0..draws-1`` selects one of several independent draws per user.
        """
        keys = noise_keys(interaction, self.USER_ID, self.ITEM_SEQ) * draws + draw
        return keyed_normal(keys, size, seed)

    def init_like_sasrec(self, module: nn.Module) -> None:
        """RecBole's SASRec initialisation with this model's ``initializer_range``; use with ``apply``."""
        init_like_sasrec(module, self.initializer_range)


class RecBoleModelContract:
    """The contract's defaults for a model of RecBole's zoo (``--model=SASRec``), which declares none of it."""

    def __init__(self, model: nn.Module, epochs: int):
        self.model = model
        self.epochs = epochs
        self.loss_names: Tuple[str, ...] = ()

    def training_stages(self) -> List[Tuple[str, int]]:
        return [("train", self.epochs)]

    def stage_learning_rate(self, stage: str) -> Optional[float]:
        return None

    def parameter_groups(self) -> Any:
        return self.model.parameters()

    def set_training_stage(self, name: str, resumed: bool = False) -> None:
        pass

    def on_epoch_start(self, epoch: int) -> None:
        pass

    def pop_diagnostics(self) -> Dict[str, float]:
        return {}


def contract_of(model: nn.Module, epochs: int):
    """The model itself when it follows the contract, else the defaults for a RecBole model."""
    return model if isinstance(model, ReasoningRecommender) else RecBoleModelContract(model, epochs)


def is_reasoning_model(model_class: type) -> bool:
    return isinstance(model_class, type) and issubclass(model_class, ReasoningRecommender)
