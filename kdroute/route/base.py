"""What every scorer is: text -> p(teacher needed) in [0, 1], with a JSON + arrays state.

Kept apart from the registry (`kdroute/route/registry.py`) so that the scorer modules import this
and the registry imports them: the dependency runs one way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


class Scorer:
    """Base: a scorer that needs no training and has no state.

    Every scorer has `score_texts(texts) -> (N,) array`, and `state() -> (params, arrays)` /
    `from_state(params, arrays)` so an artifact stores it as JSON plus numpy arrays (no pickle).
    Learned scorers set `needs_training` and implement `fit`.
    """

    name = "base"
    needs_training = False

    def score_texts(self, texts: Sequence[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, texts: Sequence[str], labels: np.ndarray,
            groups: Sequence[str] | None = None, weights: np.ndarray | None = None) -> Scorer:
        """Learn from N texts, their labels in [0, 1] (0/1 or soft, see `make_labels`),
        (optionally) the task each came from and a weight per text (None = all 1)."""
        return self

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        return {}, {}

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> Scorer:
        return cls(**params)
