"""Scorers: text -> p(teacher needed) in [0, 1]. A plain dict registry, learned ones built lazily.

Every scorer has `score_texts(texts) -> (N,) array`, and `state() -> (params, arrays)` /
`from_state(params, arrays)` so an artifact stores it as JSON plus numpy arrays (no pickle). Learned
scorers also have `fit(texts, labels)`. Heavy libraries (sklearn, sentence-transformers) are
imported by the learned scorers' modules only, never here.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Sequence

import numpy as np

from kdroute.errors import ConfigError
from kdroute.route.features import LEXICAL_NAMES, lexical_matrix


class Scorer:
    """Base: a scorer that needs no training and has no state."""

    name = "base"
    needs_training = False

    def score_texts(self, texts: Sequence[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, texts: Sequence[str], labels: np.ndarray,
            groups: Sequence[str] | None = None) -> Scorer:
        """Learn from N texts, their labels in [0, 1] (0/1 or soft, see `make_labels`) and
        (optionally) the task each came from."""
        return self

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        return {}, {}

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> Scorer:
        return cls(**params)


# Hand-set weights over LEXICAL_NAMES (no training): longer prompts, more numbers and arithmetic,
# code, multi-step or "explain why" wording and later turns of a conversation push towards the
# teacher; greetings and look-up wording towards the student.
_HEURISTIC_WEIGHTS = {
    "log_chars": 0.45, "log_words": 0.0, "mean_word_len": 0.12, "digit_frac": 6.0,
    "numbers": 0.30, "math_ops": 0.25, "code": 0.35, "hard_words": 0.30, "easy_words": -0.40,
    "questions": 0.10, "sentences": 0.20, "choices": 0.0, "long_choice": 0.05, "turns": 0.30,
}
_HEURISTIC_BIAS = -3.6


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


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


# name -> "module:Class"; learned scorers live in modules that import sklearn/torch themselves.
REGISTRY: dict[str, str] = {
    "heuristic": "kdroute.route.scorers:HeuristicScorer",
    "length": "kdroute.route.scorers:LengthScorer",
    "random": "kdroute.route.scorers:RandomScorer",
    "embedding": "kdroute.route.learned:EmbeddingScorer",
    "tfidf": "kdroute.route.learned:TfidfScorer",
    "tfidf_words": "kdroute.route.learned:TfidfWordsScorer",
    "knn": "kdroute.route.learned:KnnScorer",
    "task_prior": "kdroute.route.learned:TaskPriorScorer",
    "ensemble": "kdroute.route.ensemble:EnsembleScorer",
    "ensemble_words": "kdroute.route.ensemble:EnsembleWordsScorer",
}
# Scores that need the true labels: computed by `kdroute route eval`, never used to route.
EVAL_ONLY = ("random", "oracle")


def scorer_class(name: str) -> type[Scorer]:
    target = REGISTRY.get(name)
    if target is None:
        raise ConfigError(f"router.scorer: unknown scorer {name!r}; known: {', '.join(REGISTRY)}")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def build_scorer(name: str, **params) -> Scorer:
    """A fresh (untrained) scorer by registry name."""
    return scorer_class(name)(**params)
