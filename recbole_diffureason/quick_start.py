"""One function trains and evaluates any model; the CLI, hyper-parameter objectives and DDP ranks call it.

It is RecBole's ``run_recbole`` with this plugin's config, registry and trainer (its FLOPs line guarded and
RNG-neutral, see ``runlog.py``), plus a results file and per-epoch timings.
"""

from __future__ import annotations

import json
import platform
import sys
from logging import getLogger
from pathlib import Path
from time import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_local_time, init_logger, init_seed, set_color

from recbole_diffureason import checkpoint, runlog
from recbole_diffureason.config import DRConfig
from recbole_diffureason.data.locate import check_dataset, empty_after_filtering
from recbole_diffureason.registry import get_model, get_trainer


def build_config(
    model: Optional[str] = None,
    dataset: Optional[str] = None,
    config_file_list: Optional[List[str]] = None,
    config_dict: Optional[dict] = None,
    cmd_args: Optional[Sequence[str]] = None,
    defer_warnings: bool = False,
) -> DRConfig:
    return DRConfig(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict,
                    cmd_args=cmd_args, defer_warnings=defer_warnings)


def prepare_data(config: DRConfig):
    """RecBole's dataset and dataloaders, after checking that the dataset exists."""
    check_dataset(config)
    try:
        dataset = create_dataset(config)
    except ValueError as err:
        if "Some feat is empty" not in str(err):  # RecBole's words when filtering removed every interaction
            raise
        raise empty_after_filtering(config) from None
    train_data, valid_data, test_data = data_preparation(config, dataset)
    return dataset, train_data, valid_data, test_data


def build_model(config: DRConfig, train_data):
    model_class = get_model(config["model"])
    # Importing RecBole's sequential models runs sine.py, which switches autograd anomaly detection on for
    # the whole process; it changes no number but makes every backward pass much slower.
    torch.autograd.set_detect_anomaly(bool(config["detect_anomaly"]))
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    return model_class(config, train_data.dataset).to(config["device"])  # RecBole: the loader's dataset


def run(
    model: Optional[str] = None,
    dataset: Optional[str] = None,
    config_file_list: Optional[List[str]] = None,
    config_dict: Optional[dict] = None,
    saved: bool = True,
    cmd_args: Optional[Sequence[str]] = None,
    evaluate_test: bool = True,
    nproc: int = 1,
    world_size: int = -1,
    ip: str = "localhost",
    port: str = "5678",
    group_offset: int = 0,
) -> Optional[Dict[str, Any]]:
    """Train and evaluate, in this process or, with ``nproc > 1`` or ``world_size > 0``, as DDP ranks.

    The distributed arguments are RecBole's: ``nproc`` processes here, ranks ``group_offset ..
    group_offset + nproc - 1`` of ``world_size`` (``-1`` = ``nproc``), rendezvous at ``tcp://ip:port``. On CPU
    the ranks use gloo. The result is rank 0's (``None`` on a machine without rank 0).
    """
    if nproc == 1 and world_size <= 0:
        return run_single(model, dataset, config_file_list, config_dict, saved, cmd_args, evaluate_test=evaluate_test)
    import torch.multiprocessing as mp

    distributed = {"world_size": world_size if world_size > 0 else nproc, "ip": ip, "port": str(port),
                   "nproc": nproc, "offset": group_offset}
    queue = mp.get_context("spawn").SimpleQueue()
    args = (model, dataset, config_file_list, {**(config_dict or {}), **distributed}, saved,
            list(cmd_args) if cmd_args is not None else None, queue, evaluate_test)
    mp.spawn(_run_rank, args=args, nprocs=nproc, join=True)
    return None if queue.empty() else queue.get()


def _run_rank(local_rank: int, model, dataset, config_file_list, config_dict, saved, cmd_args, queue, evaluate_test):
    run_single(model, dataset, config_file_list, {**config_dict, "local_rank": local_rank}, saved, cmd_args, queue,
               evaluate_test)


def run_single(
    model: Optional[str] = None,
    dataset: Optional[str] = None,
    config_file_list: Optional[List[str]] = None,
    config_dict: Optional[dict] = None,
    saved: bool = True,
    cmd_args: Optional[Sequence[str]] = None,
    queue=None,
    evaluate_test: bool = True,
) -> Dict[str, Any]:
    """Train ``model`` on ``dataset`` with RecBole's pipeline; return RecBole's result dict plus timings.

    Keys: ``best_valid_score``, ``valid_score_bigger``, ``best_valid_result``, ``test_result`` (as RecBole's
    ``run_recbole``), and ``model``, ``dataset``, ``saved_model_file``, ``history`` (per-epoch losses,
    diagnostics and seconds), ``test_eval_seconds``, ``results_file``. ``evaluate_test=False`` never touches
    the test split (model-selection sweeps); ``test_result`` is then ``None``. Under DDP every rank calls
    this; rank 0 writes the files and puts the result on ``queue``.
    """
    config = build_config(model, dataset, config_file_list, config_dict, cmd_args, defer_warnings=True)
    check_dataset(config)  # a missing dataset or time column stops here, before the log file is written
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    config.emit_warnings()  # now that the log file exists, the unknown-key warnings land in it too
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)

    dataset_obj, train_data, valid_data, test_data = prepare_data(config)
    logger.info(dataset_obj)
    model_obj = build_model(config, train_data)
    logger.info(model_obj)
    runlog.log_flops(model_obj, dataset_obj, config, logger)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model_obj)

    start = time()
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    fit_seconds = time() - start
    test_result = None
    if evaluate_test:
        test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])

    runlog.log_environment(config, logger)
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    result = {
        "model": config["model"],
        "dataset": config["dataset"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "saved_model_file": trainer.saved_model_file if saved else None,
        "history": getattr(trainer, "history", []),
        "fit_seconds": fit_seconds,
        "test_eval_seconds": getattr(trainer, "last_eval_seconds", None),
    }
    if config["local_rank"] == 0:
        result["results_file"] = write_results(config, result)
        logger.info(set_color("results written to", "yellow") + f": {result['results_file']}")
    if not config["single_spec"]:
        torch.distributed.destroy_process_group()
    if config["local_rank"] == 0 and queue is not None:
        queue.put(result)
    return result


def write_results(config: DRConfig, result: Dict[str, Any]) -> str:
    path = config["results_file"] or str(
        Path(config["checkpoint_dir"]) / f"{config['model']}-{config['dataset']}-{get_local_time()}.json"
    )
    payload = {
        **{k: v for k, v in result.items() if k != "results_file"},
        "command": sys.argv,
        "seed": config["seed"],
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "device": str(config["device"])},
        "config": config.plain_dict(),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(checkpoint.to_plain(payload), f, indent=2, default=str)
    return path


def objective_function(
    config_dict: Optional[dict] = None,
    config_file_list: Optional[List[str]] = None,
    saved: bool = True,
    fixed: Optional[dict] = None,
) -> Dict[str, Any]:
    """RecBole's ``HyperTuning`` objective: one trial, ranked by its best *validation* score.

    ``config_dict`` holds the sampled hyper-parameters; ``fixed`` the keys every trial shares (model,
    dataset, command-line overrides). The command line of the search itself is never read.
    """
    result = run_single(config_file_list=config_file_list, config_dict={**(fixed or {}), **(config_dict or {})},
                        saved=saved, cmd_args=[])
    return {
        "model": result["model"],
        "best_valid_score": result["best_valid_score"],
        "valid_score_bigger": result["valid_score_bigger"],
        "best_valid_result": result["best_valid_result"],
        "test_result": result["test_result"],
    }


def load_data_and_model(model_file: str, config_dict: Optional[dict] = None) -> Tuple:
    """Rebuild ``(config, model, dataset, train_data, valid_data, test_data)`` from one of our checkpoints.

    The file is read with ``weights_only=True`` and mapped to CPU first; ``config_dict`` may override
    runtime keys such as ``data_path`` (when the data moved), ``device`` or ``eval_batch_size``. A broken or
    foreign file, or data other than the checkpoint was trained on, raises ``checkpoint.CheckpointError``.
    """
    state = checkpoint.load(model_file, map_location="cpu")
    values = dict(state["config_dict"])
    overrides = dict(config_dict or {})
    if overrides.get("data_path"):  # given as the folder that holds <dataset>/, as on the command line
        overrides["data_path"] = str(Path(overrides["data_path"]) / values["dataset"])
    values.update(overrides)
    config = DRConfig.from_plain_dict(values)
    checkpoint.check_files(state, config, model_file)  # re-converted data: refused before a log file is written
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset, train_data, valid_data, test_data = prepare_data(config)
    # Weights index items by RecBole's internal ids: on changed data they would silently score other items.
    checkpoint.check_fingerprint(state, checkpoint.dataset_fingerprint(dataset), model_file)
    model = build_model(config, train_data)
    checkpoint.check_weights_fit(state, model, model_file)
    model.load_state_dict(state["state_dict"])
    model.load_other_parameter(state.get("other_parameter"))
    model.to(config["device"])
    return config, model, dataset, train_data, valid_data, test_data
