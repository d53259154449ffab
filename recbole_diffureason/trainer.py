"""``DRTrainer``: RecBole's ``Trainer`` with safe checkpoints, exact resume, staged training and named logs.

The training loop, early stopping and full-sort evaluation are RecBole's own. This module only changes
what RecBole gets wrong on a modern stack or what long benchmark runs need:

* checkpoints load with ``torch.load(..., weights_only=True)`` (``checkpoint.py``);
* after every validation a ``*-last.pth`` file holds the full training state (weights, optimizer, early
  stopping, every RNG and the train loader's shuffling generator), so ``resume=True`` continues a killed run
  exactly where it stopped;
* the model contract of ``model/abstract.py`` is called directly: ``training_stages()`` (two-stage
  ablations, LARES SPT -> RPT) run in one ``fit`` call, each later stage starting from the best checkpoint of
  the stage before with a fresh optimizer; loss terms are logged under ``loss_names``, diagnostics
  (``pop_diagnostics()``) once per epoch, per-epoch wall times go to ``self.history``. RecBole's own models
  get the contract's defaults (``RecBoleModelContract``);
* a non-finite loss or gradient stops training with ``NonFiniteTrainingError``, which names the loss term or
  the parameters it came from (RecBole only notices a NaN loss one batch after the weights were spoiled).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from time import time
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch
import torch.distributed as dist
from recbole.evaluator import Collector
from recbole.trainer import Trainer
from recbole.trainer.trainer import AbstractTrainer
from recbole.utils import set_color
from torch.nn.parallel import DistributedDataParallel

from recbole_diffureason import checkpoint
from recbole_diffureason.model.abstract import contract_of

# Per-row entries of RecBole's evaluation DataStruct (the ones Collector.get_data_struct resets).
_ROW_KEYS = ("rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label")


class NonFiniteTrainingError(FloatingPointError):
    """A loss term or a gradient became NaN or infinite during training."""


def non_finite_gradients(parameters, limit: int = 5) -> List[str]:
    """Names of (at most ``limit``) parameters whose gradient holds a NaN or an infinity."""
    named = [(name, p.grad) for name, p in parameters if p.grad is not None]
    if not named:
        return []
    finite = torch.stack([torch.isfinite(grad).all() for _, grad in named]).cpu()  # one device sync per step
    if bool(finite.all()):
        return []
    bad = [name for (name, _), ok in zip(named, finite.tolist()) if not ok]
    return bad[:limit] + ([f"... and {len(bad) - limit} more"] if len(bad) > limit else [])


def last_checkpoint_path(saved_model_file: str) -> str:
    path = Path(saved_model_file)
    return str(path.with_name(path.stem + "-last" + path.suffix))


class GatheringCollector(Collector):
    """RecBole's ``Collector`` that, under DDP, evaluates all ranks' rows together.

    RecBole averages per-rank metrics weighted by a batch count (``_map_reduce``), and its
    ``DistributedSampler`` pads ranks with repeated users, so DDP metrics drift from single-process ones.
    Here every rank sends its rows and their user ids, repeated users are dropped, and the metrics are
    computed once over exactly the users a single process would see.
    """

    def __init__(self, config):
        super().__init__(config)
        self.user_field = config["USER_ID_FIELD"]
        self._row_users: List[torch.Tensor] = []

    def eval_batch_collect(self, scores_tensor, interaction, positive_u, positive_i):
        super().eval_batch_collect(scores_tensor, interaction, positive_u, positive_i)
        if len(interaction) == scores_tensor.size(0) and self.user_field in interaction.interaction:
            self._row_users.append(interaction[self.user_field].detach().cpu())

    def get_data_struct(self):
        struct = super().get_data_struct()
        users, self._row_users = self._row_users, []
        if not (dist.is_available() and dist.is_initialized()):
            return struct
        local = {k: struct[k] for k in _ROW_KEYS if k in struct}
        rows = next(iter(local.values())).size(0) if local else 0
        ids = torch.cat(users) if users else torch.empty(0, dtype=torch.long)
        gathered: List[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (ids if ids.numel() == rows else None, local))
        if any(g[0] is None for g in gathered):
            raise RuntimeError("Distributed evaluation needs one row per user (full-sort evaluation).")
        all_ids = torch.cat([g[0] for g in gathered])
        keep = first_occurrences(all_ids)
        for key in local:
            struct[key] = torch.cat([g[1][key] for g in gathered])[keep]
        return struct


def first_occurrences(ids: torch.Tensor) -> torch.Tensor:
    """Indices of the first occurrence of every distinct id, in order of appearance."""
    seen, keep = set(), []
    for index, value in enumerate(ids.tolist()):
        if value not in seen:
            seen.add(value)
            keep.append(index)
    return torch.tensor(keep, dtype=torch.long)


class DistributedInit(AbstractTrainer):
    """Replaces ``AbstractTrainer.__init__`` through the MRO: DDP that also works on CPU (gloo).

    RecBole passes ``device_ids=[local_rank]``, which DDP refuses for CPU modules.
    """

    def __init__(self, config, model):
        self.config, self.model = config, model
        if not config["single_spec"]:
            if config["device"].type == "cuda":
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
                self.distributed_model = DistributedDataParallel(self.model, device_ids=[config["local_rank"]])
            else:
                self.distributed_model = DistributedDataParallel(self.model)


class DRTrainerMixin:
    """Put in front of any ``recbole.trainer.Trainer`` subclass: ``class T(DRTrainerMixin, Trainer, DistributedInit)``."""

    def __init__(self, config, model):
        super().__init__(config, model)
        if config["saved_model_file"]:
            self.saved_model_file = str(config["saved_model_file"])
            Path(self.saved_model_file).parent.mkdir(parents=True, exist_ok=True)
        if not config["single_spec"]:
            # Each rank names the file by its own clock; rank 0 writes it, so every rank must use rank 0's name.
            name = [self.saved_model_file]
            dist.broadcast_object_list(name, src=0)
            self.saved_model_file = name[0]
            self.eval_collector = GatheringCollector(config)
        self.contract = contract_of(model, config["epochs"])
        self.history: List[Dict[str, Any]] = []
        self.dataset_fingerprint: Optional[Dict[str, Any]] = None  # set at the start of fit
        self._pending_data_check: Optional[tuple] = None  # a resume_checkpoint() file, checked once data is known
        self.stage_index = 0
        self._epoch_record: Dict[str, Any] = {}
        self._resumed_stage_finished = False

    # ------------------------------------------------------------------ non-finite guard
    # Where training is, for the guard's messages (class defaults: RecBole builds the optimizer in __init__).
    _batch_losses: Any = None
    _batch_index = -1
    _epoch_index = -1

    def _checks_finite(self) -> bool:
        return self.config["check_finite"] is not False

    def _build_optimizer(self, **kwargs):
        """The model's parameter groups (per-module learning rates); every optimizer, the first and each later
        stage's, refuses a step with non-finite gradients."""
        if "params" not in kwargs:  # RecBole's own call in Trainer.__init__, before self.contract exists
            kwargs["params"] = contract_of(self.model, self.config["epochs"]).parameter_groups()
        optimizer = super()._build_optimizer(**kwargs)
        if self._checks_finite():
            optimizer.register_step_pre_hook(self._refuse_non_finite_step)
        return optimizer

    def _where(self) -> str:
        values = self._batch_losses if isinstance(self._batch_losses, tuple) else (self._batch_losses,)
        terms = ", ".join(f"{n}={float(torch.as_tensor(v).detach()):.4g}"
                          for n, v in zip(self._loss_names(values), values) if v is not None)
        return f"epoch {self._epoch_index}, batch {self._batch_index} ({terms})"

    def _loss_names(self, values: tuple) -> List[str]:
        """``model.loss_names`` when it matches the loss tuple, else ``loss`` / ``loss1, loss2, ...``."""
        names = list(self.contract.loss_names)
        if len(names) == len(values):
            return names
        return [f"loss{i + 1}" for i in range(len(values))] if len(values) > 1 else ["loss"]

    def _advice(self) -> str:
        return (f" Gradient clipping is {'on: ' + str(self.config['clip_grad_norm']) if self.config['clip_grad_norm'] else 'off'}"
                f", learning_rate={self.config['learning_rate']}. Lower the learning rate or set clip_grad_norm "
                "(e.g. \"{'max_norm': 5.0}\"); resume=True restarts from the last checkpoint before the failure.")

    def _check_nan(self, loss):
        if not self._checks_finite():
            return super()._check_nan(loss)
        if not torch.isfinite(loss):
            raise NonFiniteTrainingError(f"The training loss is {float(loss.detach())} at {self._where()}." + self._advice())

    def _refuse_non_finite_step(self, optimizer, args, kwargs):
        bad = non_finite_gradients(self.model.named_parameters())
        if bad:
            raise NonFiniteTrainingError(
                f"Non-finite gradients at {self._where()} in: {', '.join(bad)}; the weights were not updated."
                + self._advice())

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_payload(self, epoch: int) -> Dict[str, Any]:
        return {
            "config_dict": self.config.plain_dict() if hasattr(self.config, "plain_dict")
            else checkpoint.to_plain(self.config.final_config_dict),
            "model_class": self.config["model"],
            "epoch": int(epoch),
            "stage_index": int(self.stage_index),
            "cur_step": int(self.cur_step),
            "best_valid_score": float(self.best_valid_score),
            "state_dict": self.model.state_dict(),
            "other_parameter": checkpoint.to_plain(self.model.other_parameter()),
            "optimizer": self.optimizer.state_dict(),
            # Set at the start of fit (_try_resume): loading against other data is refused (checkpoint.py).
            "dataset_fingerprint": self.dataset_fingerprint,
        }

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        path = kwargs.pop("saved_model_file", self.saved_model_file)
        checkpoint.save(self._checkpoint_payload(epoch), path)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {path}")

    def _load_weights(self, path: str, state: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        state = state if state is not None else checkpoint.load(path, map_location=self.device)
        if self.dataset_fingerprint is not None:  # known once fit has started
            checkpoint.check_fingerprint(state, self.dataset_fingerprint, path)
        checkpoint.check_weights_fit(state, self.model, path)
        self.model.load_state_dict(state["state_dict"])
        self.model.load_other_parameter(state.get("other_parameter"))
        return state

    def _load_written_weights(self, path: str) -> None:
        """Load the best weights this run saved; under DDP only rank 0 writes them, so every rank waits for it."""
        if not self.config["single_spec"]:
            torch.distributed.barrier()
        self._load_weights(path)

    def resume_checkpoint(self, resume_file):
        """RecBole's API: continue training from a checkpoint written by this trainer."""
        state = checkpoint.load(resume_file, map_location=self.device, resume=False)
        written_by = checkpoint.written_by(state)
        if written_by.lower() != self.config["model"].lower():
            raise checkpoint.CheckpointError(
                f"Checkpoint '{resume_file}' was written by model {written_by}, not {self.config['model']}: "
                "resume it with that model, or pass a checkpoint of this one.")
        self.saved_model_file = str(resume_file)
        self._load_weights(self.saved_model_file, state)
        # The data is known only in fit(): _try_resume compares the fingerprint before any training step.
        self._pending_data_check = (str(resume_file), state)
        self.start_epoch = state["epoch"] + 1
        self.cur_step = state["cur_step"]
        self.best_valid_score = state["best_valid_score"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return None
        if load_best_model:
            path = model_file or self.saved_model_file
            self._load_written_weights(path)
            self.logger.info(f"Loading model structure and parameters from {path}")
        start = time()
        result = super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
        self.last_eval_seconds = time() - start
        return result

    def _map_reduce(self, result, num_sample):
        return result  # GatheringCollector already evaluated every rank's rows together

    def _save_resume_state(self, epoch_idx: int, train_data) -> None:
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        payload = self._checkpoint_payload(epoch_idx)
        payload.update(
            best_valid_result=checkpoint.to_plain(dict(self.best_valid_result or {})),
            history=checkpoint.to_plain(self.history),
            rng=checkpoint.rng_state(),
            loader_generator=train_data.generator.get_state() if hasattr(train_data, "generator") else None,
        )
        checkpoint.save(payload, last_checkpoint_path(self.saved_model_file))

    def _try_resume(self, train_data) -> bool:
        """Called first in ``fit``: fingerprint the data, then continue from a ``*-last.pth`` if ``resume``.

        With ``saved_model_file`` set, its ``-last`` file is the one (a different configuration or data is an
        error). Without it, run names hold their start time, so the newest ``*-last.pth`` in ``checkpoint_dir``
        of the same model, dataset, configuration and data is the one (``checkpoint.find_resumable``).
        """
        self.dataset_fingerprint = checkpoint.dataset_fingerprint(train_data.dataset)
        pending = self._pending_data_check  # from resume_checkpoint()
        if pending is not None:
            checkpoint.check_fingerprint(pending[1], self.dataset_fingerprint, pending[0])
            self._pending_data_check = None
        if not self.config["resume"]:
            return False
        path = self._resume_file()
        if path is None:
            return False
        state = checkpoint.load(path, map_location=self.device, resume=True)
        current = (self.config.plain_dict() if hasattr(self.config, "plain_dict")
                   else checkpoint.to_plain(self.config.final_config_dict))
        differences = checkpoint.config_differences(state["config_dict"], current)
        if differences:
            raise checkpoint.CheckpointError(
                f"Cannot resume from '{path}': it was written with another configuration ({'; '.join(differences)}). "
                "Use the same settings, choose another saved_model_file, or set resume=False to start over "
                "(which overwrites that run's files).")
        self._load_weights(path, state)  # checks the data fingerprint before touching the weights
        self.stage_index = state["stage_index"]
        self.start_epoch = state["epoch"] + 1
        self.cur_step = state["cur_step"]
        self.best_valid_score = state["best_valid_score"]
        self.best_valid_result = state["best_valid_result"] or None
        self.history = list(state["history"])
        self._pending_optimizer_state = state["optimizer"]
        checkpoint.set_rng_state(state["rng"])
        if state.get("loader_generator") is not None and hasattr(train_data, "generator"):
            train_data.generator.set_state(state["loader_generator"])
        stage_epochs = self._stages()[self.stage_index][1]
        self._resumed_stage_finished = self.cur_step > self.stopping_step or self.start_epoch >= stage_epochs
        self.logger.info(
            set_color("Resuming", "blue") + f" from {path}: stage {self.stage_index}, epoch {self.start_epoch}"
        )
        return True

    def _resume_file(self) -> Optional[str]:
        """The ``*-last.pth`` file ``resume=True`` continues from, or ``None`` (and the log says why)."""
        if self.config["saved_model_file"]:
            path = last_checkpoint_path(self.saved_model_file)
            if Path(path).is_file():
                return path
            self.logger.info(f"resume=True: '{path}' does not exist yet; training starts from epoch 0.")
            return None
        current = (self.config.plain_dict() if hasattr(self.config, "plain_dict")
                   else checkpoint.to_plain(self.config.final_config_dict))
        found, notes = checkpoint.find_resumable(self.checkpoint_dir, current, self.dataset_fingerprint)
        if not self.config["single_spec"]:  # rank 0 decides, so that every rank resumes the same file
            choice = [str(found) if found else None]
            dist.broadcast_object_list(choice, src=0)
            found = Path(choice[0]) if choice[0] else None
        if found is None:
            self.logger.warning(
                f"resume=True: no '*-last.pth' in '{self.checkpoint_dir}' was written by {self.config['model']} on "
                f"dataset {self.config['dataset']} with this configuration and data"
                + (f" (passed over: {' | '.join(notes[:3])})" if notes else "")
                + "; training starts from epoch 0. Pass --saved_model_file=<run>.pth to name a run.")
            return None
        self.saved_model_file = checkpoint.best_checkpoint_path(found)
        self.logger.info(set_color("resume=True", "blue") + f": the latest matching run is {found}")
        return str(found)

    # ------------------------------------------------------------------ training loop hooks
    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self.contract.on_epoch_start(epoch_idx)
        start = time()
        compute = loss_func or self.model.calculate_loss
        self._epoch_index, self._batch_index = epoch_idx, -1

        def remembering_loss(interaction):
            self._batch_index += 1
            self._batch_losses = compute(interaction)
            return self._batch_losses

        losses = super()._train_epoch(train_data, epoch_idx, loss_func=remembering_loss, show_progress=show_progress)
        n_batches = max(len(train_data), 1)
        values = losses if isinstance(losses, tuple) else (losses,)
        names = self._loss_names(values)
        self._epoch_record = {
            "stage": self._stage_name(),
            "epoch": int(epoch_idx),
            "train_seconds": time() - start,
            "losses": {n: float(v) / n_batches for n, v in zip(names, values)},
            "diagnostics": self.contract.pop_diagnostics(),
        }
        self.history.append(self._epoch_record)
        return losses

    def _generate_train_loss_output(self, epoch_idx, s_time, e_time, losses):
        """RecBole's line (the sums over batches, ``train_loss1``... for a tuple), then the terms by name.

        Logs of RecBole and of this plugin stay comparable line by line; the per-epoch JSON history keeps
        the means per batch.
        """
        record = self._epoch_record
        des = self.config["loss_decimal_place"] or 4
        text = super()._generate_train_loss_output(epoch_idx, s_time, e_time, losses)
        values = losses if isinstance(losses, tuple) else (losses,)
        names = self._loss_names(values)
        if len(values) > 1 and list(names) != [f"loss{i + 1}" for i in range(len(values))]:
            text += " " + set_color("terms (sum)", "blue") + ": "
            text += ", ".join(f"{n}: {float(v):.{des}f}" for n, v in zip(names, values))
        if record.get("diagnostics"):
            text += "\n" + set_color("diagnostics", "blue") + ": "
            text += ", ".join(f"{k}: {v:.{des}f}" for k, v in record["diagnostics"].items())
        return text

    def _add_train_loss_to_tensorboard(self, epoch_idx, losses, tag="Loss/Train"):
        super()._add_train_loss_to_tensorboard(epoch_idx, losses, tag)  # RecBole's scalars (sums)
        for name, value in self._epoch_record.get("losses", {}).items():  # mean per batch, by name
            self.tensorboard.add_scalar(f"{tag}/{name}", value, epoch_idx)
        for name, value in self._epoch_record.get("diagnostics", {}).items():
            self.tensorboard.add_scalar(f"Diagnostics/{name}", value, epoch_idx)

    def _valid_epoch(self, valid_data, show_progress=False):
        start = time()
        score, result = super()._valid_epoch(valid_data, show_progress=show_progress)
        self._epoch_record.update(valid_seconds=time() - start, valid_score=float(score), valid_result=dict(result))
        return score, result

    # ------------------------------------------------------------------ stages
    def _stages(self):
        return self.contract.training_stages()

    def _stage_name(self) -> str:
        return self._stages()[self.stage_index][0]

    def _enter_stage(self, index: int, fresh: bool, saved: bool) -> None:
        """Switch the model to stage ``index``; a fresh stage starts from the best weights so far."""
        name, epochs = self._stages()[index]
        self.stage_index = index
        if fresh and index > 0:
            if saved:
                self._load_written_weights(self.saved_model_file)
            self.start_epoch, self.cur_step = 0, 0
            self.best_valid_score = -float("inf") if self.valid_metric_bigger else float("inf")
            self.best_valid_result = None
        self.contract.set_training_stage(name, resumed=not fresh)
        # Rebuilt for a resumed stage too: a stage may train only some parameters (backbone_first's first stage),
        # and the saved optimizer state, loaded next, holds that stage's groups.
        lr = self.contract.stage_learning_rate(name) or self.learning_rate
        self.optimizer = self._build_optimizer(params=self.contract.parameter_groups(), learning_rate=lr)
        self.epochs = epochs
        self.eval_step = min(self.config["eval_step"], epochs)
        self.logger.info(set_color(f"Training stage '{name}'", "yellow") + f" for up to {epochs} epochs")

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        resumed = self._try_resume(train_data)
        stages = self._stages()

        def on_validated(epoch_idx, valid_score):
            if saved:
                self._save_resume_state(epoch_idx, train_data)
            if callback_fn:
                callback_fn(epoch_idx, valid_score)
            notify_epoch_listeners(self, epoch_idx, valid_score)

        result = (self.best_valid_score, self.best_valid_result)
        for index in range(self.stage_index, len(stages)):
            continuing = resumed and index == self.stage_index
            self._enter_stage(index, fresh=not continuing, saved=saved)
            if continuing:
                self.optimizer.load_state_dict(self._pending_optimizer_state)
                if self._resumed_stage_finished:
                    continue
            result = super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn=on_validated)
            if index + 1 < len(stages):
                self.start_epoch = 0
        return result


# Per-epoch listeners (e.g. a Ray Tune trial reporting every validation so a scheduler can stop it early):
# callables ``fn(info)`` registered for the duration of a ``with epoch_listener(fn):`` block, because the
# trainer is built deep inside ``quick_start.run_single`` where no callback can be passed.
_EPOCH_LISTENERS: List[Callable[[Dict[str, Any]], None]] = []


@contextmanager
def epoch_listener(fn: Callable[[Dict[str, Any]], None]) -> Iterator[None]:
    """Call ``fn`` after every validation of every ``DRTrainer`` fit inside the block.

    ``fn`` gets ``{"epoch", "stage", "valid_score", "valid_result", "best_valid_score"}``.
    """
    _EPOCH_LISTENERS.append(fn)
    try:
        yield
    finally:
        _EPOCH_LISTENERS.remove(fn)


def notify_epoch_listeners(trainer: "DRTrainerMixin", epoch_idx: int, valid_score: float) -> None:
    if not _EPOCH_LISTENERS:
        return
    info = {"epoch": int(epoch_idx), "stage": trainer._stage_name(), "valid_score": float(valid_score),
            "valid_result": {k: float(v) for k, v in (trainer._epoch_record.get("valid_result") or {}).items()},
            "best_valid_score": float(trainer.best_valid_score)}
    for fn in list(_EPOCH_LISTENERS):
        fn(info)


class DRTrainer(DRTrainerMixin, Trainer, DistributedInit):
    """RecBole's ``Trainer`` with this plugin's checkpoints, resume, stages, logging and CPU DDP."""


class LARESTrainer(DRTrainer):
    """``DRTrainer`` plus LARES's RPT data selection (LARES section 2.4).

    On the first RPT epoch the frozen SPT model scores every training sample (``LARES.rpt_sample_mask``)
    and RPT trains on a loader over the kept rows only, with the configured batch size. That loader shares
    its shuffling state with the original one, so ``resume`` still continues exactly.
    """

    def __init__(self, config, model):
        super().__init__(config, model)
        self._rpt_train_data = None

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if self._stage_name() != "rpt" or self.model.rpt_filter == "none":
            return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        selected = self._selected_train_data(train_data)
        selected.generator.set_state(train_data.generator.get_state())
        losses = super()._train_epoch(selected, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        train_data.generator.set_state(selected.generator.get_state())
        return losses

    def _selected_train_data(self, train_data):
        if self._rpt_train_data is not None:
            return self._rpt_train_data
        dataset = train_data.dataset  # RecBole's public name for the loader's dataset outside iteration
        feat = dataset.inter_feat
        model = self.model
        # A dedicated generator: the selection is reproducible and leaves the training RNG streams alone.
        generator = torch.Generator().manual_seed(int(self.config["seed"]))
        step = self.config["eval_batch_size"] or len(feat)
        masks = []
        for start in range(0, len(feat), step):
            rows = feat[start : start + step].to(self.device)
            masks.append(model.rpt_sample_mask(rows[model.ITEM_SEQ], rows[model.ITEM_SEQ_LEN],
                                               rows[model.POS_ITEM_ID], generator).cpu())
        keep = torch.cat(masks).nonzero(as_tuple=True)[0]
        if keep.numel() == 0:
            raise RuntimeError("LARES data selection kept no training sample; lower rpt_filter_topk or set "
                               "rpt_filter='none'.")
        self.rpt_kept_share = keep.numel() / max(len(feat), 1)
        model.record_diagnostics(rpt_kept_share=self.rpt_kept_share)
        self.logger.info(set_color("RPT data selection", "yellow")
                         + f": {keep.numel()} of {len(feat)} training samples kept ({self.rpt_kept_share:.1%})")
        # LARES trains with a full-softmax CE (check_config), so its train loader has no negative sampler.
        self._rpt_train_data = type(train_data)(self.config, dataset.copy(feat[keep]), None, shuffle=train_data.shuffle)
        return self._rpt_train_data
