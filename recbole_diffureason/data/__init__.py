"""Dataset conversion and lookup."""

from recbole_diffureason.data.convert import MalformedDatasetError, convert
from recbole_diffureason.data.locate import DatasetNotFoundError, check_dataset

__all__ = ["convert", "check_dataset", "MalformedDatasetError", "DatasetNotFoundError"]
