"""Fixes that let RecBole 1.2.1 run on a modern stack without forking it.

Imported first by ``recbole_diffureason/__init__.py`` so that every RecBole module we import afterwards
sees the patched environment. Each fix is documented in docs/design.md section R.3.
"""

import os
import warnings

import numpy as np

# RecBole 1.2.1 still uses the numpy aliases removed in numpy 1.24 (np.float in the NDCG metric,
# np.bool in Interaction, ...). Its own Config.compatibility_settings() re-adds them, but it reads
# np.float_ and np.unicode_, which numpy 2 removed; this version only adds what is missing.
_NUMPY_ALIASES = {
    "bool": np.bool_,
    "int": np.int_,
    "float": np.float64,
    "complex": np.complex128,
    "object": np.object_,
    "str": np.str_,
    "long": np.int_,
    "unicode": np.str_,
}


def add_numpy_aliases() -> None:
    for name, value in _NUMPY_ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, value)


def add_scipy_dok_update() -> None:
    """scipy>=1.13 removed ``dok_matrix._update``, which RecBole's graph baselines call."""
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy is a RecBole dependency
        return
    if not hasattr(sp.dok_matrix, "_update"):
        sp.dok_matrix._update = lambda self, data: self._dict.update(data)


def silence_known_warnings() -> None:
    # pandas 2.x warns on RecBole's chained inplace fillna once per field and dataset build.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.data\.dataset.*")
    # RecBole's trainer builds torch.cuda.amp.GradScaler every epoch, deprecated in torch 2.x.
    warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.GradScaler.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*pkg_resources is deprecated.*")


def _ensure_dir(dir_path: str) -> None:
    os.makedirs(dir_path, exist_ok=True)


# Every RecBole module that imported ensure_dir by name keeps its own reference to it.
_ENSURE_DIR_USERS = (
    "recbole.utils",
    "recbole.utils.utils",
    "recbole.utils.logger",
    "recbole.trainer.trainer",
    "recbole.data.utils",
    "recbole.data.dataset.dataset",
)


def make_ensure_dir_race_free() -> None:
    """RecBole's ``ensure_dir`` checks, then creates: two DDP ranks starting together both see the
    directory missing and the slower one dies with FileExistsError (``./log`` on a fresh checkout)."""
    import importlib

    for name in _ENSURE_DIR_USERS:
        module = importlib.import_module(name)
        if hasattr(module, "ensure_dir"):
            module.ensure_dir = _ensure_dir


def apply() -> None:
    add_numpy_aliases()
    add_scipy_dok_update()
    silence_known_warnings()
    make_ensure_dir_race_free()
