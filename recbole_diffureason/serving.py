"""Top-k recommendations from a trained checkpoint, for a known user or for a raw item history.

    from recbole_diffureason.serving import Recommender
    rec = Recommender("saved/DiffuReasonSASRec-....pth")
    rec.for_user("42", k=10)                 # [("item token", score), ...], best first
    rec.for_history(["1", "7", "3"], k=10)   # a history of raw item ids, oldest first

Ids are the raw tokens of the dataset files, in and out; the padding item never appears.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from recbole.data.interaction import Interaction
from recbole.utils import ModelType

from recbole_diffureason.quick_start import load_data_and_model


class UnknownIdError(KeyError):
    """A user or item id that the checkpoint's dataset does not contain."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class Recommender:
    """A checkpoint loaded once (safely, on CPU unless ``config_dict`` says otherwise) to answer queries."""

    def __init__(self, model_file: str, config_dict: Optional[dict] = None):
        self.config, self.model, self.dataset, *_ = load_data_and_model(model_file, config_dict)
        self.model.eval()
        self.user_field, self.item_field = self.config["USER_ID_FIELD"], self.config["ITEM_ID_FIELD"]
        self.sequential = self.config["MODEL_TYPE"] == ModelType.SEQUENTIAL
        self.max_length = self.config["MAX_ITEM_LIST_LENGTH"]
        self._histories: Optional[Dict[int, torch.Tensor]] = None

    # ------------------------------------------------------------------ id mapping
    def _internal_id(self, field: str, token: str) -> int:
        index = self.dataset.field2token_id[field].get(str(token))
        if index is None or index == 0:
            examples = ", ".join(list(self.dataset.field2id_token[field][1:4]))
            kind = "user" if field == self.user_field else "item"
            raise UnknownIdError(
                f"Unknown {kind} id '{token}': dataset '{self.config['dataset']}' has {self.dataset.num(field) - 1} "
                f"{kind}s (e.g. {examples}). Ids are the raw tokens of the dataset's .inter file."
            )
        return index

    def history_of(self, user: str) -> List[str]:
        """The user's most recent items in the dataset, oldest first (at most MAX_ITEM_LIST_LENGTH)."""
        sequence = self._user_histories()[self._internal_id(self.user_field, user)]
        return [str(t) for t in self.dataset.id2token(self.item_field, sequence.numpy())]

    def _user_histories(self) -> Dict[int, torch.Tensor]:
        """Each user's last augmented row (rows are sorted by user, then time) holds their latest history."""
        if self._histories is None:
            feat = self.dataset.inter_feat
            users, targets = feat[self.user_field], feat[self.item_field]
            seqs, lengths = feat[self.item_field + self.config["LIST_SUFFIX"]], feat[self.config["ITEM_LIST_LENGTH_FIELD"]]
            is_last = torch.ones_like(users, dtype=torch.bool)
            is_last[:-1] = users[1:] != users[:-1]
            self._histories = {}
            for row in is_last.nonzero(as_tuple=True)[0].tolist():
                full = torch.cat([seqs[row, : lengths[row]], targets[row : row + 1]])
                self._histories[int(users[row])] = full[-self.max_length :]
        return self._histories

    # ------------------------------------------------------------------ queries
    def for_user(self, user: str, k: int = 10, exclude_seen: bool = False) -> List[Tuple[str, float]]:
        user_id = self._internal_id(self.user_field, user)
        if not self.sequential:
            return self._top_k(Interaction({self.user_field: torch.tensor([user_id])}), k, None)
        sequence = self._user_histories().get(user_id)
        if sequence is None:
            raise UnknownIdError(f"User '{user}' has no history in dataset '{self.config['dataset']}'.")
        return self._top_k(self._sequence_interaction(sequence, user_id), k, sequence if exclude_seen else None)

    def for_history(self, items: Sequence[str], k: int = 10, exclude_seen: bool = False) -> List[Tuple[str, float]]:
        if not self.sequential:
            raise ValueError(f"{self.config['model']} is not a sequential model; recommend for a user instead.")
        if not items:
            raise ValueError("The history is empty: give at least one item id.")
        sequence = torch.tensor([self._internal_id(self.item_field, t) for t in items])[-self.max_length :]
        return self._top_k(self._sequence_interaction(sequence, None), k, sequence if exclude_seen else None)

    def _sequence_interaction(self, sequence: torch.Tensor, user_id: Optional[int]) -> Interaction:
        padded = torch.zeros(1, self.max_length, dtype=torch.long)
        padded[0, : len(sequence)] = sequence
        fields = {self.item_field + self.config["LIST_SUFFIX"]: padded,
                  self.config["ITEM_LIST_LENGTH_FIELD"]: torch.tensor([len(sequence)])}
        if user_id is not None:
            fields[self.user_field] = torch.tensor([user_id])
        return Interaction(fields)

    @torch.no_grad()
    def _top_k(self, interaction: Interaction, k: int, exclude: Optional[torch.Tensor]) -> List[Tuple[str, float]]:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}.")
        scores = self.model.full_sort_predict(interaction.to(self.config["device"])).view(-1).float().cpu()
        scores[0] = -torch.inf  # padding
        if exclude is not None:
            scores[exclude] = -torch.inf
        top = torch.topk(scores, min(k, int(torch.isfinite(scores).sum()))).indices
        tokens = self.dataset.id2token(self.item_field, top.numpy())
        return [(str(t), float(scores[i])) for t, i in zip(tokens, top.tolist())]
