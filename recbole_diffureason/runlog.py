"""The lines RecBole's ``run_recbole`` logs that need care here: FLOPs and the environment table.

RecBole's ``get_flops`` deep-copies the model and runs ``predict`` on one raw dataset row. For a reasoning
model that may fail (the row is not what the model expects) or, in training mode, draw dropout masks and
noise from the global RNGs, which would shift every seeded number after it. ``count_flops`` therefore runs it
between a save and a restore of every RNG state and turns any failure into ``None`` ("FLOPs: n/a").
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Optional

from recbole.utils import get_environment, set_color
from recbole.utils import get_flops as _recbole_get_flops

from recbole_diffureason import checkpoint

# Bound at import, before ``recbole_api.register`` wraps RecBole's names: always RecBole's own function.
_GET_FLOPS = getattr(_recbole_get_flops, "__recbole_diffureason_original__", _recbole_get_flops)


def logs_info(config) -> bool:
    """Whether the run logs INFO lines (RecBole's ``state``), i.e. whether the FLOPs and environment lines show.

    Read from the config rather than the logger: ``logging.basicConfig`` keeps the level of the first run in a
    process, so the logger's level says nothing about this run.
    """
    state = config["state"]
    return state is None or str(state).lower() in ("info", "debug")


def count_flops(model, dataset, device, logger, transform) -> Optional[Any]:
    """RecBole's FLOPs count of ``model``, or ``None`` when it cannot be computed; the RNG states are unchanged."""
    saved = checkpoint.rng_state()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _GET_FLOPS(model, dataset, device, logger, transform)
    except Exception as err:  # any model RecBole's tracer cannot run: the line says n/a, the run goes on
        logger.debug(f"FLOPs not counted: {type(err).__name__}: {err}")
        return None
    finally:
        checkpoint.set_rng_state(saved)


def log_flops(model, dataset, config, logger: logging.Logger) -> None:
    """``FLOPs: <n>`` as RecBole's ``run_recbole`` logs it, or ``FLOPs: n/a``."""
    if not logs_info(config) or config["local_rank"] != 0:
        return  # the count deep-copies the model: skip it when no one would see the line
    from recbole.data.transform import construct_transform

    try:
        transform = construct_transform(config)
    except Exception:  # pragma: no cover - a transform RecBole cannot build fails later, with its own message
        transform = None
    flops = count_flops(model, dataset, config["device"], logger, transform) if transform is not None else None
    logger.info(set_color("FLOPs", "blue") + f": {'n/a' if flops is None else flops}")


def log_environment(config, logger: logging.Logger) -> None:
    """RecBole's environment table (CPU, GPU and memory use) after the run, as ``run_recbole`` logs it."""
    if not logs_info(config):
        return  # get_environment samples the CPU for one second
    try:
        table = get_environment(config).draw()
    except Exception as err:  # pragma: no cover - psutil missing or a sandbox without /proc
        logger.info(f"The running environment could not be read: {type(err).__name__}: {err}")
        return
    logger.info("The running environment of this training is as follows:\n" + table)
