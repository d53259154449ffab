"""Declarative checks for model hyper-parameters.

A model class lists its keys in ``config_keys`` (a dict ``name -> Key``). ``DRConfig`` checks every
listed key once the YAML layers, config files, config dict and command line are merged, so a bad value
fails before any data is loaded, with a message that names the key, the value, what is allowed and
where the default lives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence


class ConfigError(ValueError):
    """A configuration key is missing or holds a value the model cannot use."""


@dataclass(frozen=True)
class Key:
    """Base check: the key must be present (not ``None``) unless ``optional``; ``why`` is added to the message."""

    optional: bool = False
    why: str = ""

    def describe(self) -> str:
        return "any value"

    def accepts(self, value: Any) -> bool:
        return True

    def problem(self, value: Any) -> Optional[str]:
        if value is None:
            return None if self.optional else "is missing"
        if not self.accepts(value):
            return f"is {value!r}, but must be {self.describe()}" + (f": {self.why}" if self.why else "")
        return None


@dataclass(frozen=True)
class Int(Key):
    min: Optional[int] = None
    max: Optional[int] = None

    def describe(self) -> str:
        return "an integer" + _range_text(self.min, self.max, True, True)

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int):
            return False
        return _in_range(value, self.min, self.max, True, True)


@dataclass(frozen=True)
class Float(Key):
    min: Optional[float] = None
    max: Optional[float] = None
    min_inclusive: bool = True
    max_inclusive: bool = True

    def describe(self) -> str:
        return "a number" + _range_text(self.min, self.max, self.min_inclusive, self.max_inclusive)

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return _in_range(float(value), self.min, self.max, self.min_inclusive, self.max_inclusive)


@dataclass(frozen=True)
class Bool(Key):
    def describe(self) -> str:
        return "True or False"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)


@dataclass(frozen=True)
class Choice(Key):
    choices: Sequence[Any] = ()

    def describe(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)

    def accepts(self, value: Any) -> bool:
        return value in self.choices


# RecBole SASRec's own keys, checked for every model built from SASRec's layers; their defaults live in
# RecBole's properties/model/SASRec.yaml (layered below ours through ``backbone_name``) or in ours.
SASREC_KEYS = {
    "hidden_size": Int(min=2),
    "n_heads": Int(min=1),
    "inner_size": Int(min=1),
    "hidden_dropout_prob": Float(min=0.0, max=1.0, max_inclusive=False),
    "attn_dropout_prob": Float(min=0.0, max=1.0, max_inclusive=False),
    "hidden_act": Choice(choices=("gelu", "relu", "swish", "tanh", "sigmoid")),
    "layer_norm_eps": Float(min=0.0, min_inclusive=False),
    "initializer_range": Float(min=0.0),
    "loss_type": Choice(choices=("CE",), why="the model trains with a full-softmax cross-entropy over all items"),
}


def _in_range(v: float, lo, hi, lo_inc: bool, hi_inc: bool) -> bool:
    if lo is not None and (v < lo or (v == lo and not lo_inc)):
        return False
    if hi is not None and (v > hi or (v == hi and not hi_inc)):
        return False
    return True


def _range_text(lo, hi, lo_inc: bool, hi_inc: bool) -> str:
    parts = []
    if lo is not None:
        parts.append((">= " if lo_inc else "> ") + str(lo))
    if hi is not None:
        parts.append(("<= " if hi_inc else "< ") + str(hi))
    return (" " + " and ".join(parts)) if parts else ""


def collect_config_keys(model_class: type) -> dict:
    """Merge ``config_keys`` along the MRO; subclasses override their bases. RecBole's models declare none."""
    keys: dict = {}
    for klass in reversed(model_class.__mro__):
        keys.update(vars(klass).get("config_keys", {}))
    return keys


def validate(config: Mapping[str, Any], keys: Mapping[str, Key], where: str) -> None:
    """Raise one ``ConfigError`` that lists every bad key."""
    problems = []
    for name, spec in keys.items():
        issue = spec.problem(config.get(name))
        if issue:
            problems.append(f"'{name}' {issue}")
    if problems:
        raise ConfigError(
            "Invalid configuration for " + where + ":\n  - " + "\n  - ".join(problems)
            + "\nSet the key on the command line (--key=value), in a --config_files YAML or in config_dict."
        )


def apply_preset(config: dict, explicit: Mapping[str, Any], presets: Mapping[str, Mapping[str, Any]],
                 key: str = "ablation") -> None:
    """Set the keys of the preset ``config[key]`` names (one ablation row); giving one of them another value
    explicitly is an error rather than a silent override."""
    name = config.get(key)
    if name not in presets:
        return
    for fixed, value in presets[name].items():
        if fixed in explicit and explicit[fixed] != value:
            raise ConfigError(f"{key} '{name}' sets '{fixed}' to {value!r}, but {explicit[fixed]!r} was given.")
        config[fixed] = value


def require_divisible(name_a: str, a: int, name_b: str, b: int) -> None:
    if b <= 0 or a % b != 0:
        raise ConfigError(f"'{name_a}' ({a}) must be divisible by '{name_b}' ({b}).")


def check_heads_divide_width(config: Mapping[str, Any]) -> None:
    """SASRec-style attention splits ``hidden_size`` evenly over ``n_heads``."""
    require_divisible("hidden_size", config["hidden_size"], "n_heads", config["n_heads"])

