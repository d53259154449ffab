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
                 key: str = "ablation", strict: bool = True) -> None:
    """Set the keys of the preset ``config[key]`` names.

    ``strict`` (an ablation row: the preset *is* the experiment): giving one of its keys another value
    explicitly is an error rather than a silent override. Not strict (a starting configuration): keys given
    explicitly win over the preset.
    """
    name = config.get(key)
    if name not in presets:
        return
    for fixed, value in presets[name].items():
        if fixed in explicit and explicit[fixed] != value:
            if strict:
                raise ConfigError(f"{key} '{name}' sets '{fixed}' to {value!r}, but {explicit[fixed]!r} was given.")
            continue
        config[fixed] = value


def require_divisible(name_a: str, a: int, name_b: str, b: int) -> None:
    if b <= 0 or a % b != 0:
        raise ConfigError(f"'{name_a}' ({a}) must be divisible by '{name_b}' ({b}).")


def check_heads_divide_width(config: Mapping[str, Any]) -> None:
    """SASRec-style attention splits ``hidden_size`` evenly over ``n_heads``."""
    require_divisible("hidden_size", config["hidden_size"], "n_heads", config["n_heads"])



# ---------------------------------------------------------------------- RecBole's own keys
# RecBole checks few of its keys, late (some only after the data has loaded or an epoch has trained) and with
# tracebacks; DRConfig checks the ones users set most, for every model (RecBole's zoo included), before any
# data loads. Their defaults live in RecBole's properties/overall.yaml.


@dataclass(frozen=True)
class Str(Key):
    """A non-empty string."""

    def describe(self) -> str:
        return "a non-empty string"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and bool(value.strip())


@dataclass(frozen=True)
class ListOf(Key):
    """A list whose every entry passes ``item``; ``allow_single`` also takes one bare entry, as RecBole does
    for ``metrics: NDCG`` or ``topk: 10``."""

    item: Key = Key()
    min_length: int = 1
    allow_single: bool = False

    def describe(self) -> str:
        size = "a non-empty list" if self.min_length == 1 else f"a list of at least {self.min_length} entries"
        text = f"{size}, each {self.item.describe()}"
        return text + (" (or one such entry)" if self.allow_single else "")

    def accepts(self, value: Any) -> bool:
        if self.allow_single and not isinstance(value, (list, tuple)):
            value = [value]
        if not isinstance(value, (list, tuple)) or len(value) < self.min_length:
            return False
        return all(v is not None and self.item.accepts(v) for v in value)


@dataclass(frozen=True)
class CaselessChoice(Choice):
    """``Choice`` compared without case: RecBole lower-cases metric names."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and value.lower() in {str(c).lower() for c in self.choices}


_SPLIT_TEXT = "{'RS': [train, valid, test] ratios} or {'LS': 'valid_and_test' | 'test_only'}"
_MODE_PATTERN = r"full|labeled|(uni|pop)[1-9][0-9]*"


@dataclass(frozen=True)
class EvalArgs(Key):
    """RecBole's ``eval_args``: a mapping of ``split``, ``group_by``, ``order`` and ``mode``, each optional."""

    def problem(self, value: Any) -> Optional[str]:
        import re

        if value is None:
            return None if self.optional else "is missing"
        if not isinstance(value, dict):
            return f"is {value!r}, but must be a mapping such as {{split: {{LS: valid_and_test}}, order: TO, mode: full}}"
        unknown = sorted(set(value) - {"split", "group_by", "order", "mode"})
        if unknown:
            return f"has unknown entries {unknown}: allowed are split, group_by, order and mode"
        split = value.get("split")
        if split is not None:
            if not isinstance(split, dict) or len(split) != 1 or next(iter(split)) not in ("RS", "LS"):
                return f"has split {split!r}, but it must be {_SPLIT_TEXT}"
            kind, args = next(iter(split.items()))
            if kind == "RS" and not (
                isinstance(args, (list, tuple)) and 1 <= len(args) <= 3
                and all(not isinstance(a, bool) and isinstance(a, (int, float)) and a >= 0 for a in args)
                and sum(args) > 0
            ):
                return f"has split {split!r}, but 'RS' takes a list of up to 3 non-negative ratios, e.g. [0.8, 0.1, 0.1]"
            if kind == "LS" and args not in ("valid_and_test", "test_only"):
                return f"has split {split!r}, but 'LS' takes 'valid_and_test' or 'test_only'"
        if value.get("order") not in (None, "RO", "TO"):
            return f"has order {value['order']!r}, but it must be 'RO' (random) or 'TO' (by time)"
        if value.get("group_by") not in (None, "user", "none"):
            return f"has group_by {value['group_by']!r}, but it must be 'user' or 'none'"
        mode = value.get("mode")
        if mode is not None:
            modes = mode.values() if isinstance(mode, dict) else [mode]
            bad_keys = sorted(set(mode) - {"valid", "test"}) if isinstance(mode, dict) else []
            if bad_keys or not all(isinstance(m, str) and re.fullmatch(_MODE_PATTERN, m) for m in modes):
                return (f"has mode {mode!r}, but it must be 'full', 'labeled', 'uniN' or 'popN' (N >= 1), "
                        "or a mapping {valid: ..., test: ...} of those")
        return None


def _metric_names() -> Sequence[str]:
    from recbole.evaluator.register import metrics_dict

    return sorted(metrics_dict)


# RecBole metrics whose results carry no '@k' (they score all items, not a top-k list).
UNRANKED_METRICS = ("auc", "gauc", "logloss", "mae", "rmse")


def recbole_keys() -> dict:
    """Rules for the RecBole keys users set most (built on demand: the metric names come from RecBole)."""
    return {
        "epochs": Int(min=1),
        "train_batch_size": Int(min=1),
        "eval_batch_size": Int(min=1),
        "learning_rate": Float(min=0.0, min_inclusive=False),
        "MAX_ITEM_LIST_LENGTH": Int(min=1, optional=True),
        "topk": ListOf(item=Int(min=1), allow_single=True),
        "metrics": ListOf(item=CaselessChoice(choices=_metric_names()), allow_single=True),
        "valid_metric": Str(why="a metric of 'metrics', with '@k' for a k of 'topk', e.g. NDCG@10"),
        "eval_args": EvalArgs(),
        "stopping_step": Int(min=0),
        "eval_step": Int(min=0),
        "seed": Int(min=0, max=2**32 - 1, why="numpy seeds must fit in 32 bits"),
    }


def check_recbole_keys(config: Mapping[str, Any], where: str) -> None:
    """Check RecBole's keys one by one, then how ``metrics``, ``topk``, ``valid_metric`` and ``eval_args`` fit
    together (RecBole would fail on these after the first epoch, or while building the evaluator)."""
    validate(config, recbole_keys(), where)
    from recbole.evaluator.register import metric_types

    metrics = config["metrics"] if isinstance(config["metrics"], (list, tuple)) else [config["metrics"]]
    metrics = [m.lower() for m in metrics]
    topk = config["topk"] if isinstance(config["topk"], (list, tuple)) else [config["topk"]]
    problems = []
    if len({metric_types[m] for m in metrics}) > 1:
        problems.append(f"'metrics' {list(config['metrics'])} mixes ranking metrics with value metrics "
                        f"({', '.join(m for m in metrics if m in UNRANKED_METRICS and m != 'gauc')}); "
                        "RecBole evaluates one kind per run")
    name, _, k = config["valid_metric"].lower().partition("@")
    if name not in metrics:
        problems.append(f"'valid_metric' is {config['valid_metric']!r}, but '{name}' is not in 'metrics' "
                        f"{metrics}: choose one of those or add it to 'metrics' (RecBole would fail only after "
                        "the first epoch)")
    elif name in UNRANKED_METRICS and k:
        problems.append(f"'valid_metric' is {config['valid_metric']!r}, but {name} has no cutoff: write '{name}'")
    elif name not in UNRANKED_METRICS and (not k.isdigit() or int(k) not in topk):
        problems.append(f"'valid_metric' is {config['valid_metric']!r}, but {name} needs '@k' with k one of "
                        f"'topk' {topk}, e.g. '{config['valid_metric'].split('@')[0]}@{topk[0]}'")
    mode = config["eval_args"].get("mode") if isinstance(config["eval_args"], dict) else None
    # RecBole fills a missing mode with 'full'.
    modes = list(mode.values()) if isinstance(mode, dict) else ["full" if mode is None else mode]
    value_metrics = [m for m in metrics if m in ("auc", "logloss", "mae", "rmse")]
    if value_metrics and "full" in modes:
        problems.append(f"'metrics' {value_metrics} score labelled pairs, which full-ranking evaluation "
                        "(eval_args mode 'full') does not produce: use ranking metrics or mode 'labeled'")
    if problems:
        raise ConfigError(
            "Invalid configuration for " + where + ":\n  - " + "\n  - ".join(problems)
            + "\nSet the key on the command line (--key=value), in a --config_files YAML or in config_dict."
        )
