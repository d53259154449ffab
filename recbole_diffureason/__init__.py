"""recbole-diffureason: latent-reasoning sequential recommenders (DiffuReason, ReaRec, LARES) for RecBole."""

from recbole_diffureason import compat as _compat

_compat.apply()

__version__ = "0.2.0"

from recbole_diffureason.registry import get_model, get_trainer, list_models  # noqa: E402
from recbole_diffureason.quick_start import load_data_and_model, run  # noqa: E402
from recbole_diffureason import recbole_api as _recbole_api  # noqa: E402

# RecBole's get_model, run_recbole and load_data_and_model find this plugin's models and checkpoints.
_recbole_api.register()

__all__ = ["run", "load_data_and_model", "get_model", "get_trainer", "list_models", "__version__"]
