"""What every Semantic-ID model does with its dataset's SIDs, written once for HSTUSID, TIGER and their
DiffuReason variants: the shared keys and checks, loading the code table, and the decoding trie."""

from __future__ import annotations

from logging import getLogger
from typing import Any, Dict, Mapping

from recbole_diffureason.keys import Choice, ConfigError, Int, Key
from recbole_diffureason.sid.table import FLAG_FIELD, SID_FIELD, codes_from_dataset, read_sid_meta
from recbole_diffureason.sid.trie import SIDTrie

SID_MODEL_KEYS: Dict[str, Key] = {
    "codebook_size": Int(min=2),
    "beam_width": Int(min=1),
    "loss_type": Choice(choices=("CE",), why="SID models train with cross-entropies over codes"),
}


def require_sid_columns(config: dict) -> None:
    """SID models read the ``sid`` and ``has_sid`` item features: add them to ``load_col`` whatever the dataset
    YAML (which sits above the model's) says, so that ``--dataset=<any tokenized name>`` just works."""
    load_col = dict(config.get("load_col") or {"inter": [config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]]})
    item = list(load_col.get("item") or [])
    for field in (config["ITEM_ID_FIELD"], SID_FIELD, FLAG_FIELD):
        if field not in item:
            item.append(field)
    load_col["item"] = item
    config["load_col"] = load_col


def check_beam_covers_topk(config: Mapping[str, Any]) -> None:
    largest = max(config["topk"]) if isinstance(config.get("topk"), (list, tuple)) else config.get("topk")
    if largest and config["beam_width"] < largest:
        raise ConfigError(f"'beam_width' ({config['beam_width']}) must be at least the largest topk ({largest}): "
                          "each beam is one ranked item.")


class SemanticIDItems:
    """Mixed into a SID model (a ``torch.nn.Module``): ``item_codes`` (buffer ``[n_items, L]``, -1 for padding),
    ``levels``, ``codebook_size``, ``beam_width``, the trie, and a log line naming the SIDs the run uses. Put it
    first among the bases: its config hooks add to the model's (``super()``)."""

    @classmethod
    def apply_presets(cls, config: dict, explicit: Mapping[str, Any]) -> None:
        super().apply_presets(config, explicit)
        require_sid_columns(config)

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> None:
        super().check_config(config)
        check_beam_covers_topk(config)

    def load_item_codes(self, config, dataset) -> None:
        codes = codes_from_dataset(dataset)
        self.codebook_size, self.beam_width = config["codebook_size"], config["beam_width"]
        if int(codes.max()) >= self.codebook_size:
            raise ConfigError(f"The dataset's SIDs use code {int(codes.max())}, but codebook_size is "
                              f"{self.codebook_size}: set codebook_size to at least {int(codes.max()) + 1}.")
        self.register_buffer("item_codes", codes, persistent=False)
        self.levels = codes.size(1)
        self.trie = SIDTrie(codes, self.codebook_size)
        self.sid_source = read_sid_meta(dataset.dataset_path, dataset.dataset_name)
        getLogger().info(f"{type(self).__name__} uses the SIDs of {dataset.dataset_name}: "
                         f"{(self.sid_source or {}).get('source', 'unknown source')}, {self.levels} levels")

    def decoding_trie(self) -> SIDTrie:
        """The trie on the model's device (it is not a module, so ``.to()`` does not move it)."""
        if self.trie.item_codes.device != self.item_codes.device:
            self.trie.to(self.item_codes.device)
        return self.trie
