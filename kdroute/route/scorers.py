"""The scorers that need no training: hand-set lexical weights, length, and a random baseline.

The base class is in `base.py`, the learned scorers in `learned.py` / `ensemble.py`, and the name
-> class dict in `registry.py`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from kdroute.route.base import Scorer, sigmoid
from kdroute.route.features import LEXICAL_NAMES, lexical_matrix

__all__ = ["Scorer", "sigmoid", "HeuristicScorer", "LengthScorer", "RandomScorer"]


# Hand-set weights over LEXICAL_NAMES (no training): longer prompts, more numbers and arithmetic,
# code, multi-step or "explain why" wording and later turns of a conversation push towards the
# teacher; greetings and look-up wording towards the student.
_HEURISTIC_WEIGHTS = {
    "log_chars": 0.45, "log_words": 0.0, "mean_word_len": 0.12, "digit_frac": 6.0,
    "numbers": 0.30, "math_ops": 0.25, "code": 0.35, "hard_words": 0.30, "easy_words": -0.40,
    "questions": 0.10, "sentences": 0.20, "choices": 0.0, "long_choice": 0.05, "turns": 0.30,
}
_HEURISTIC_BIAS = -3.6


class HeuristicScorer(Scorer):
    """Length and lexical features with fixed weights: no training, microseconds per prompt."""

    name = "heuristic"

    def __init__(self, weights: dict[str, float] | None = None, bias: float = _HEURISTIC_BIAS):
        self.weights = dict(_HEURISTIC_WEIGHTS, **(weights or {}))
        self.bias = float(bias)
        self._w = np.array([self.weights[n] for n in LEXICAL_NAMES])

    def score_texts(self, texts: Sequence[str]) -> np.ndarray:
        return sigmoid(lexical_matrix(texts) @ self._w + self.bias)

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        return {"weights": self.weights, "bias": self.bias}, {}


class LengthScorer(Scorer):
    """The prompt's length alone (longer = harder): a strong baseline on math word problems."""

    name = "length"

    def __init__(self, center: float = 5.5):
        self.center = float(center)

    def score_texts(self, texts: Sequence[str]) -> np.ndarray:
        return sigmoid(np.log1p(np.array([len(t) for t in texts], dtype=np.float64))
                       - self.center)

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        return {"center": self.center}, {}


class RandomScorer(Scorer):
    """Evaluation baseline: a uniform score derived from a hash of the text (reproducible)."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def score_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty(len(texts))
        for i, text in enumerate(texts):
            digest = hashlib.blake2b(f"{self.seed}:{text}".encode(), digest_size=8).digest()
            out[i] = int.from_bytes(digest, "big") / 2**64
        return out

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        return {"seed": self.seed}, {}
