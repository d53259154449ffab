"""Small pieces every model of this plugin shares."""

from __future__ import annotations

from typing import Dict, List


class DiagnosticsMixin:
    """Values a model records per batch; ``DRTrainer`` logs their per-epoch means via ``pop_diagnostics``."""

    def _record(self, **values: float) -> None:
        store: Dict[str, List[float]] = self.__dict__.setdefault("_diagnostics", {})
        for key, value in values.items():
            store.setdefault(key, []).append(float(value))

    def pop_diagnostics(self) -> Dict[str, float]:
        """Per-epoch means of the recorded diagnostics, then reset."""
        store = self.__dict__.get("_diagnostics", {})
        means = {k: sum(v) / len(v) for k, v in store.items() if v}
        self.__dict__["_diagnostics"] = {}
        return means
