"""``DRConfig``: RecBole's ``Config`` with plugin model resolution, YAML layering and key validation.

Layers, later wins (``dict.update`` as in RecBole):

1. RecBole ``properties/overall.yaml`` and, for RecBole built-ins, ``properties/model/<Name>.yaml``
2. the backbone's YAML (RecBole's or ours) for models that wrap a backbone (``backbone_name``)
3. our ``properties/overall.yaml``
4. our ``properties/model/<Name>.yaml``
5. RecBole ``dataset/sample.yaml`` and ``dataset/<dataset>.yaml``, then our ``dataset/<dataset>.yaml``, then
   the data folder's ``<data_path>/<dataset>/<dataset>.yaml`` (``convert`` writes it: what the data needs)
6. RecBole's quick-start YAML for the model type (``sequential.yaml``: leave-one-out, full ranking)
7. config files < ``config_dict`` < command line (``--key=value``)
"""

from __future__ import annotations

import difflib
import os
from logging import getLogger
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import recbole
import yaml
from recbole.config import Config
from recbole.utils import (
    ModelType,
    dataset_arguments,
    evaluation_arguments,
    general_arguments,
    training_arguments,
)

from recbole_diffureason import compat, registry
from recbole_diffureason.keys import ConfigError, check_recbole_keys, collect_config_keys, validate
from recbole_diffureason.model.abstract import is_reasoning_model

_RECBOLE_PROPERTIES = Path(recbole.__file__).resolve().parent / "properties"

# Keys RecBole sets or reads that are not in its YAML files.
_RUNTIME_KEYS = {
    "model", "dataset", "config_files", "local_rank", "world_size", "ip", "port", "nproc", "offset",
    "single_spec", "device", "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "valid_metric_bigger",
    "train_neg_sample_args", "valid_neg_sample_args", "test_neg_sample_args", "data_path", "ddp_backend",
}


def properties_dir() -> Path:
    """Our ``properties/``: inside the package when installed from a wheel, beside it in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "properties", here.parent / "properties"):
        if (candidate / "overall.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"recbole_diffureason cannot find its properties/ folder next to {here}. Reinstall the package "
        "(pip install -e . from the repository root, or pip install the built wheel)."
    )


def read_yaml(path: os.PathLike, loader=yaml.FullLoader) -> Dict[str, Any]:
    """Read a YAML mapping, with an error that names the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file '{path}' does not exist.")
    with open(path, "r", encoding="utf-8") as f:
        try:
            data = yaml.load(f.read(), Loader=loader)
        except yaml.YAMLError as err:
            raise ConfigError(f"Config file '{path}' is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file '{path}' must hold a mapping of key: value lines, got {type(data).__name__}.")
    return data


def parse_cmd_args(args: Sequence[str]) -> Dict[str, str]:
    """``['--lr=0.1', ...]`` -> ``{'lr': '0.1'}``; RecBole's rules, but malformed entries are errors."""
    parsed: Dict[str, str] = {}
    for arg in args:
        if not arg.startswith("--") or "=" not in arg or not arg[2:].split("=", 1)[0]:
            raise ConfigError(f"Cannot read command-line override '{arg}': write it as --key=value.")
        key, value = arg[2:].split("=", 1)
        if key in parsed and parsed[key] != value:
            raise ConfigError(f"Command-line key '{key}' is given twice with different values.")
        parsed[key] = value
    return parsed


def typed_values(values: Dict[str, str]) -> Dict[str, Any]:
    """Command-line strings to Python values with RecBole's own rules ('0.1' -> 0.1, '[1,2]' -> [1, 2])."""
    return Config._convert_config_dict(None, dict(values))  # it reads no instance state


class DRConfig(Config):
    """RecBole ``Config`` that knows this plugin's models, YAMLs and key checks.

    Args:
        model: model name (plugin or RecBole built-in) or class.
        dataset: dataset name.
        config_file_list: YAML files, later files win.
        config_dict: overrides above the files.
        cmd_args: ``--key=value`` overrides above ``config_dict``. ``None`` reads ``sys.argv`` as RecBole
            does; pass a list (possibly empty) to ignore ``sys.argv`` (tests, Ray workers, pytest).
        defer_warnings: keep the unknown-key warnings in ``warnings`` instead of logging them now; a run calls
            ``emit_warnings()`` once RecBole's ``init_logger`` has opened the log file (it needs this config).
    """

    def __init__(
        self,
        model=None,
        dataset: Optional[str] = None,
        config_file_list: Optional[List[str]] = None,
        config_dict: Optional[dict] = None,
        cmd_args: Optional[Sequence[str]] = None,
        defer_warnings: bool = False,
    ):
        self._cmd_args = cmd_args
        self.warnings: List[str] = []
        self._applied_internal_files: List[str] = []
        super().__init__(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
        self._validate_model_keys()
        self._warn_unknown_keys()
        if not defer_warnings:
            self.emit_warnings()

    # ------------------------------------------------------------------ external inputs
    def compatibility_settings(self):
        compat.add_numpy_aliases()

    def _load_config_files(self, file_list):
        merged: Dict[str, Any] = {}
        for file in file_list or []:
            merged.update(read_yaml(file, loader=self.yaml_loader))
        return merged

    def _load_cmd_line(self):
        if self._cmd_args is None:
            return super()._load_cmd_line()
        return self._convert_config_dict(parse_cmd_args(self._cmd_args))

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise ConfigError("No model given: pass --model=<Name> (see --list_models).")
        if isinstance(model, str):
            model_class = registry.get_model(model)
        else:
            model_class, model = model, model.__name__
        if dataset is None:
            dataset = self.external_config_dict.get("dataset")
            if dataset is None:
                raise ConfigError("No dataset given: pass --dataset=<name>, e.g. --dataset=ml-100k.")
        return model, model_class, dataset

    # ------------------------------------------------------------------ internal YAML layers
    def _update_internal_config_dict(self, file):
        self._applied_internal_files.append(os.path.realpath(file))
        return super()._update_internal_config_dict(file)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        recbole_files = self._applied_internal_files[:]
        ours = properties_dir()
        dataset_layers = [f for f in recbole_files if "/properties/dataset/" in f]
        quick_start_layers = [f for f in recbole_files if "/properties/quick_start_config/" in f]

        data_yaml = self._data_folder_yaml(dataset)
        dataset_layers += [str(ours / "dataset" / f"{dataset}.yaml")] + ([str(data_yaml)] if data_yaml else [])
        layers = self._backbone_yamls(model_class) + [ours / "overall.yaml", ours / "model" / f"{model}.yaml"]
        layers += dataset_layers + quick_start_layers
        for layer in layers:
            if os.path.isfile(layer):
                if layer == str(data_yaml):
                    read_yaml(layer, loader=self.yaml_loader)  # a broken file is named, not a yaml traceback
                values = self._update_internal_config_dict(str(layer))
                if str(layer) in dataset_layers and values:
                    self.parameters["Dataset"] += [k for k in values if k not in self.parameters["Dataset"]]

    def _data_folder_yaml(self, dataset: str) -> Optional[Path]:
        """``<data_path>/<dataset>/<dataset>.yaml``, written by ``convert`` next to the atomic file.

        RecBole reads no YAML from the data folder, so a converted dataset would get RecBole's defaults (no time
        column loaded, random split) and crash or train on another protocol. ml-100k always comes from RecBole.
        """
        if dataset == "ml-100k":
            return None
        root = self.external_config_dict.get("data_path") or self.internal_config_dict.get("data_path")
        path = Path(str(root or "dataset/")) / dataset / f"{dataset}.yaml"
        return path if path.is_file() else None

    @staticmethod
    def _backbone_yamls(model_class) -> List[Path]:
        backbone = model_class.backbone_name if is_reasoning_model(model_class) else None
        if not backbone:
            return []
        return [_RECBOLE_PROPERTIES / "model" / f"{backbone}.yaml", properties_dir() / "model" / f"{backbone}.yaml"]

    # ------------------------------------------------------------------ defaults and checks
    def _set_default_parameters(self):
        fc = self.final_config_dict
        # RecBole's own keys, for every model: RecBole would fail on these later, with tracebacks (some only
        # after the data has loaded or the first epoch has trained).
        check_recbole_keys(fc, f"model {self.model}")
        # RecBole's overall.yaml samples a negative per positive, which a CE-trained sequential model refuses;
        # RecBole-GNN ships a YAML for this. An explicit user setting still reaches RecBole's own check.
        if (
            fc.get("MODEL_TYPE") == ModelType.SEQUENTIAL
            and fc.get("loss_type") == "CE"
            and "train_neg_sample_args" not in self.external_config_dict
        ):
            fc["train_neg_sample_args"] = None
        super()._set_default_parameters()

    def _validate_model_keys(self):
        if not is_reasoning_model(self.model_class):
            return  # RecBole's own models: RecBole checks them
        self.model_class.apply_presets(self.final_config_dict, self.external_config_dict)
        validate(self.final_config_dict, collect_config_keys(self.model_class), f"model {self.model}")
        self.model_class.check_config(self.final_config_dict)

    def _warn_unknown_keys(self):
        known = set(self.internal_config_dict) | _RUNTIME_KEYS | set(collect_config_keys(self.model_class))
        for group in (general_arguments, training_arguments, evaluation_arguments, dataset_arguments):
            known |= set(group)
        unknown = [k for k in self.external_config_dict if k not in known]
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            self.warnings.append(f"Config key '{key}' is not used by RecBole or by model {self.model}.{hint}")
        self.unknown_keys = unknown

    def emit_warnings(self) -> None:
        """Log the kept warnings once (to the log file too when RecBole's logger is set up)."""
        logger = getLogger()
        for message in self.warnings:
            logger.warning(message)
        self.warnings = []

    def _init_device(self):
        """RecBole's device set-up, plus distributed training on CPU with gloo.

        RecBole 1.2.1 hard-codes the NCCL backend and CUDA devices for DDP. Here the backend is NCCL when
        CUDA is usable and gloo otherwise (``ddp_backend`` forces one), and CPU ranks split the cores.
        """
        fc = self.final_config_dict
        if "local_rank" not in fc:
            return super()._init_device()
        import torch
        import torch.distributed as dist

        gpu_id = fc["gpu_id"]
        fc["gpu_id"] = ",".join(map(str, gpu_id)) if isinstance(gpu_id, (tuple, list)) else str(gpu_id)
        use_cuda = bool(fc.get("use_gpu", True)) and torch.cuda.is_available() and len(fc["gpu_id"]) > 0
        backend = fc.get("ddp_backend") or ("nccl" if use_cuda else "gloo")
        if use_cuda:
            os.environ["CUDA_VISIBLE_DEVICES"] = fc["gpu_id"]
            if len(fc["gpu_id"].split(",")) < fc["nproc"]:
                raise ConfigError(f"nproc={fc['nproc']} needs as many GPUs in gpu_id, got '{fc['gpu_id']}'.")
        if not dist.is_initialized():
            dist.init_process_group(
                backend=backend,
                rank=fc["local_rank"] + fc["offset"],
                world_size=fc["world_size"],
                init_method=f"tcp://{fc['ip']}:{fc['port']}",
            )
        if use_cuda:
            fc["device"] = torch.device("cuda", fc["local_rank"])
            torch.cuda.set_device(fc["local_rank"])
        else:
            fc["device"] = torch.device("cpu")
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // fc["nproc"]))
        fc["single_spec"] = False
        if fc["local_rank"] != 0:
            fc.update(state="error", show_progress=False, verbose=False)

    def plain_dict(self) -> Dict[str, Any]:
        """``final_config_dict`` with Enums, devices and numpy scalars turned into plain values."""
        from recbole_diffureason.checkpoint import to_plain

        return to_plain(self.final_config_dict)

    def _fill_keys_added_since(self, model: str) -> None:
        """Give a key the checkpoint predates its default from ``properties/model/<model>.yaml``: a key is only
        ever added with a default that keeps the earlier behaviour, so old checkpoints score as they were trained."""
        model_yaml = properties_dir() / "model" / f"{model}.yaml"
        if model_yaml.is_file():
            for key, value in read_yaml(model_yaml, self.yaml_loader).items():
                self.final_config_dict.setdefault(key, value)

    @classmethod
    def from_plain_dict(cls, values: Dict[str, Any]) -> "DRConfig":
        """Rebuild a config from ``plain_dict()`` (checkpoints), without re-running the YAML layering."""
        from recbole_diffureason.checkpoint import from_plain

        import torch

        config = cls.__new__(cls)
        config._cmd_args = []
        config._applied_internal_files = []
        config._init_parameters_category()
        config.yaml_loader = config._build_yaml_loader()
        config.final_config_dict = from_plain(values)
        config.model = config.final_config_dict["model"]
        config._fill_keys_added_since(config.model)
        config.dataset = config.final_config_dict["dataset"]
        config.model_class = registry.get_model(config.model)
        config.internal_config_dict, config.external_config_dict = {}, {}
        config.unknown_keys = []
        config.warnings = []
        device = config.final_config_dict.get("device", "cpu")
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            device = "cpu"
        config.final_config_dict["device"] = torch.device(device)
        config.final_config_dict["single_spec"] = True
        config.final_config_dict["local_rank"] = 0
        return config
