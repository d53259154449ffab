"""Hyper-parameter search for any model: RecBole's ``HyperTuning`` (hyperopt) or Ray Tune.

Both read RecBole's params-file format, one parameter per line::

    learning_rate loguniform -8,0          # exp(uniform(-8, 0)), as hyperopt's loguniform
    alpha uniform 0.1,2.0
    group_size quniform 4,16,4
    reasoning_steps choice [1,2,3,4]

and both run every trial through ``quick_start.run_single``, select on the best **validation** score, and
write RecBole's result file (parameters, then the valid and test results of each trial).
"""

from __future__ import annotations

import ast
import math
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from recbole.utils import dict2str

from recbole_diffureason.keys import ConfigError
from recbole_diffureason.quick_start import objective_function, run_single

PARAM_TYPES = ("choice", "uniform", "quniform", "loguniform")
ALGORITHMS = ("exhaustive", "random", "bayes")


@dataclass(frozen=True)
class SearchParam:
    name: str
    kind: str
    values: tuple  # choice: the options; uniform/loguniform: (low, high); quniform: (low, high, q)


def read_params_file(path: os.PathLike) -> List[SearchParam]:
    """Parse a RecBole params file, with errors that name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Params file '{path}' does not exist.")
    params = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        where = f"{path}:{number}"
        if len(parts) < 3:
            raise ConfigError(f"{where}: expected '<name> <{'|'.join(PARAM_TYPES)}> <values>', got {line!r}.")
        name, kind, raw = parts[0], parts[1], "".join(parts[2:])
        params.append(SearchParam(name, kind, _parse_values(kind, raw, where)))
    if not params:
        raise ConfigError(f"Params file '{path}' defines no parameter.")
    return params


def _parse_values(kind: str, raw: str, where: str) -> tuple:
    if kind == "choice":
        try:
            values = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            raise ConfigError(f"{where}: choice values must be a Python list literal such as [1,2,3], got {raw!r}.") from None
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"{where}: choice values must be a non-empty list, got {raw!r}.")
        return tuple(values)
    if kind not in PARAM_TYPES:
        raise ConfigError(f"{where}: unknown parameter type {kind!r}; use one of {', '.join(PARAM_TYPES)}.")
    try:
        numbers = tuple(float(v) for v in raw.split(","))
    except ValueError:
        raise ConfigError(f"{where}: {kind} needs comma-separated numbers, got {raw!r}.") from None
    expected = 3 if kind == "quniform" else 2
    if len(numbers) != expected or numbers[0] > numbers[1] or (kind == "quniform" and numbers[2] <= 0):
        shape = "low,high,q (q > 0)" if kind == "quniform" else "low,high"
        raise ConfigError(f"{where}: {kind} needs {shape} with low <= high, got {raw!r}.")
    return numbers


def to_recbole_params_dict(params: Sequence[SearchParam]) -> Dict[str, Dict[str, Any]]:
    """The ``params_dict`` form that RecBole's ``HyperTuning`` builds its hyperopt space from."""
    grouped: Dict[str, Dict[str, Any]] = {}
    for p in params:
        grouped.setdefault(p.kind, {})[p.name] = list(p.values)
    return grouped


def to_ray_space(params: Sequence[SearchParam], grid: bool) -> Dict[str, Any]:
    """Ray Tune search space; ``grid=True`` enumerates every choice (RecBole's ``exhaustive``)."""
    from ray import tune

    space = {}
    for p in params:
        if p.kind == "choice":
            space[p.name] = tune.grid_search(list(p.values)) if grid else tune.choice(list(p.values))
        elif grid:
            raise ConfigError(f"Exhaustive search needs choice parameters only; '{p.name}' is {p.kind}.")
        elif p.kind == "uniform":
            space[p.name] = tune.uniform(*p.values)
        elif p.kind == "quniform":
            space[p.name] = tune.quniform(*p.values)
        else:  # hyperopt's loguniform bounds are exponents; Ray's are values
            space[p.name] = tune.loguniform(math.exp(p.values[0]), math.exp(p.values[1]))
    return space


def absolute_paths(fixed: Dict[str, Any], config_files: Optional[List[str]] = None) -> Dict[str, Any]:
    """Trials may run in other working directories (Ray); make the data and output folders absolute.

    A folder set in a config file (and not in ``fixed``) is taken from there: ``fixed`` becomes each trial's
    ``config_dict``, which beats the config files, so a default here would silently replace the file's value.
    """
    from recbole_diffureason.config import read_yaml

    from_files: Dict[str, Any] = {}
    for file in config_files or []:
        from_files.update(read_yaml(file))
    out = dict(fixed)
    for key, default in (("data_path", "dataset/"), ("checkpoint_dir", "saved/")):
        out[key] = str(Path(out.get(key) or from_files.get(key) or default).resolve())
    return out


def run_hyperopt(
    params_file: str,
    fixed: Dict[str, Any],
    config_files: Optional[List[str]] = None,
    algo: str = "exhaustive",
    max_evals: int = 100,
    early_stop: Optional[int] = None,
    output_file: Optional[str] = None,
    display_file: Optional[str] = None,
) -> Dict[str, Any]:
    """Search with RecBole's ``HyperTuning``; return the best parameters and every trial's results."""
    from recbole.trainer import HyperTuning

    if algo not in ALGORITHMS:
        raise ConfigError(f"Unknown search algorithm {algo!r}; use one of {', '.join(ALGORITHMS)}.")
    params = read_params_file(params_file)
    check_fixed_config(fixed, config_files)
    objective = partial(objective_function, fixed=absolute_paths(fixed, config_files))
    tuner = HyperTuning(
        objective,
        params_dict=to_recbole_params_dict(params),
        fixed_config_file_list=config_files,
        display_file=display_file,
        algo=algo,
        max_evals=max_evals,
        # hyperopt stops after `early_stop` trials without progress; a grid should run to the end.
        early_stop=early_stop if early_stop is not None else 10 ** 6,
    )
    tuner.run()
    if output_file:
        Path(output_file).parent.mkdir(parents=True, exist_ok=True)
        tuner.export_result(output_file=output_file)
    return {"best_params": tuner.best_params, "best_valid_score": tuner.best_score, "trials": tuner.params2result}


SCHEDULERS = ("fifo", "asha")


def _ray_trial(params: Dict[str, Any], fixed: Dict[str, Any], config_files: Optional[List[str]]) -> None:
    """One Ray trial: reports after every validation, so a scheduler (ASHA) can stop a weak trial early.

    Ray only ever sees validation metrics: ``valid_score`` is the best validation score so far (what the
    trial would deliver if stopped now, and what trials are ranked by) and ``valid_<metric>`` the metrics of
    that best epoch. The test split is scored by ``run_single`` into ``recbole_result.json`` in the trial's
    folder, which only the driver reads, after the search.
    """
    from ray.air import session

    from recbole_diffureason.trainer import epoch_listener

    state: Dict[str, Any] = {"best": None, "best_result": {}, "reports": 0}

    def report(info: Dict[str, Any]) -> None:
        if state["best"] is None or info["best_valid_score"] != state["best"]:
            state["best"], state["best_result"] = info["best_valid_score"], info["valid_result"]
        state["reports"] += 1
        # Ray ends a trial its scheduler stops inside this call (SystemExit in the trial's thread).
        session.report({"valid_score": info["best_valid_score"], "epoch_valid_score": info["valid_score"],
                        "epoch": info["epoch"], "stage": info["stage"],
                        **{f"valid_{k}": v for k, v in state["best_result"].items()}})

    results_file = str(Path(session.get_trial_dir()) / TRIAL_RESULTS)
    with epoch_listener(report):
        result = run_single(config_file_list=config_files,
                            config_dict={**fixed, **params, "results_file": results_file}, saved=True, cmd_args=[])
    if state["reports"] == 0:  # no validation ran (eval_step > epochs): one report at the end
        session.report({"valid_score": float(result["best_valid_score"]),
                        **{f"valid_{k}": float(v) for k, v in (result["best_valid_result"] or {}).items()}})


TRIAL_RESULTS = "recbole_result.json"


# ASHA stops a trial that reaches max_t; no trial of ours gets that far, so every trial that survives the rungs
# ends its own way (early stopping, last epoch of its last stage) and scores its test split. Models with
# several stages validate more often than `epochs`, so max_t cannot be taken from the config.
_ASHA_MAX_T = 10 ** 6


def make_scheduler(name: Optional[str], grace_period: int = 1, reduction_factor: float = 2):
    """``None`` (Ray's FIFO: every trial runs to the end) or an ASHA scheduler over validations."""
    if name in (None, "fifo"):
        return None
    if name != "asha":
        raise ConfigError(f"Unknown scheduler {name!r}; use one of {', '.join(SCHEDULERS)}.")
    if grace_period < 1 or reduction_factor <= 1:
        raise ConfigError(f"ASHA needs --grace_period >= 1 and --reduction_factor > 1; got "
                          f"grace_period={grace_period}, reduction_factor={reduction_factor}.")
    from ray.tune.schedulers import ASHAScheduler

    # One time unit = one validation (training_iteration counts reports); metric and mode come from tune.run.
    return ASHAScheduler(time_attr="training_iteration", max_t=_ASHA_MAX_T, grace_period=grace_period,
                         reduction_factor=reduction_factor)


def run_ray(
    params_file: str,
    fixed: Dict[str, Any],
    config_files: Optional[List[str]] = None,
    algo: str = "random",
    num_samples: int = 10,
    max_concurrent: int = 1,
    cpus_per_trial: float = 1.0,
    output_file: Optional[str] = None,
    local_dir: str = "ray_results",
    ray_init: Optional[Dict[str, Any]] = None,
    scheduler: Optional[str] = None,
    grace_period: int = 1,
    reduction_factor: float = 2,
) -> Dict[str, Any]:
    """Search with Ray Tune on CPU resources; ``exhaustive`` runs the full grid of choice parameters.

    ``scheduler="asha"`` stops trials whose best validation score so far is in the bottom of their rung
    (``grace_period`` validations before the first cut, the top ``1/reduction_factor`` go on). Stopped trials
    appear in the result with ``stopped_early`` and no test result.
    """
    import json

    import ray
    from ray import tune

    if algo not in ("exhaustive", "random"):
        raise ConfigError("Ray search supports algo 'exhaustive' (grid) or 'random'.")
    params = read_params_file(params_file)
    files = [str(Path(f).resolve()) for f in config_files] if config_files else None
    fixed = absolute_paths(fixed, files)
    shared = check_fixed_config(fixed, files)
    mode = "max" if shared["valid_metric_bigger"] else "min"
    trial_scheduler = make_scheduler(scheduler, grace_period, reduction_factor)
    space = to_ray_space(params, grid=algo == "exhaustive")
    if not ray.is_initialized():
        ray.init(**{"include_dashboard": False, "log_to_driver": False, **(ray_init or {})})
    analysis = tune.run(
        tune.with_parameters(_ray_trial, fixed=fixed, config_files=files),
        config=space,
        num_samples=1 if algo == "exhaustive" else num_samples,
        max_concurrent_trials=max_concurrent,
        resources_per_trial={"cpu": cpus_per_trial},
        metric="valid_score",
        mode=mode,
        scheduler=trial_scheduler,
        local_dir=str(Path(local_dir).resolve()),
        chdir_to_trial_dir=False,
        verbose=1,
        raise_on_failed_trial=False,  # a failed trial (e.g. a sampled value a model refuses) is reported below
    )
    trials = []
    for trial in analysis.trials:
        last = trial.last_result or {}
        saved = Path(trial.logdir) / TRIAL_RESULTS if trial.logdir else None
        finished = saved is not None and saved.is_file()
        test = json.loads(saved.read_text(encoding="utf-8")).get("test_result") if finished else None
        valid = {k[len("valid_"):]: v for k, v in last.items() if k.startswith("valid_") and k != "valid_score"}
        trials.append({"params": trial.config, "valid_score": last.get("valid_score"), "valid": valid, "test": test,
                       "validations": last.get("training_iteration", 0), "status": trial.status,
                       "stopped_early": trial.status == "TERMINATED" and not finished,
                       "error": _first_error_line(trial) if trial.status == "ERROR" else None})
    if output_file:
        _write_result_file(output_file, trials)
    best = analysis.best_trial
    return {"best_params": best.config if best else None,
            "best_valid_score": best.last_result.get("valid_score") if best else None, "trials": trials}


def _first_error_line(trial) -> str:
    """The last line of a failed trial's error file (the exception and its message), for the result file."""
    path = Path(trial.logdir or ".") / "error.txt"
    if path.is_file():
        lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()
    return "the trial failed (see Ray's output)"


def check_fixed_config(fixed: Dict[str, Any], config_files: Optional[List[str]]):
    """Build the trials' shared config once, so a bad key fails before any trial starts."""
    from recbole_diffureason.config import DRConfig

    return DRConfig(config_file_list=config_files, config_dict=dict(fixed), cmd_args=[])


def _write_result_file(path: str, trials: List[Dict[str, Any]]) -> None:
    """The same layout as RecBole's ``HyperTuning.export_result``, plus a line for trials a scheduler stopped."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for t in trials:
            f.write(", ".join(f"{k}:{v}" for k, v in t["params"].items()) + "\n")
            if t.get("error"):
                f.write(f"Failed: {t['error']}\n")
            if t.get("stopped_early"):
                f.write(f"Stopped early by the scheduler after {t['validations']} validation(s)\n")
            f.write("Valid result:\n" + dict2str(t["valid"]) + "\n")
            f.write("Test result:\n" + (dict2str(t["test"]) if t["test"] else "-") + "\n\n")
