"""`guarded`: the topic-aware `ensemble` near the training prompts, the task-blind `general`
scorer far from them (issue 15's out-of-distribution awareness).

Why: `ensemble` (embedding, tfidf, length) is the best within the data it was fitted on, but its
heads learn each task's label rate and rank at random on another data set; `general` (length,
difficulty, embedding_within) knows no task's rate and carries over. How far is far is measured
on the training data only: each training prompt's similarity to the others (mean cosine
similarity of its k nearest neighbours in MiniLM space, from inner folds) gives the distribution
of how close traffic like the training data is. A prompt less similar than the `floor` share of
those (bottom 10 % by default) is shrunk toward `general`, fully so at the least similar end:

    a = clip(CDF_train(similarity) / floor, 0, 1),   score = a * pct_topic + (1 - a) * pct_general

with each scorer's score turned into its percentile among the training prompts' scores, so the
two mix on one scale. No weight is fitted: there are no far-off examples inside one data set to
fit one on (the `stacked` scorer's learned gate did not hold up, route_generalise.json).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kdroute.route.base import Scorer
from kdroute.route.ensemble import QUANTILES, EnsembleScorer, GeneralScorer
from kdroute.route.folds import folds_of
from kdroute.route.learned import check_labels, embed
from kdroute.route.stacked import neighbour_similarity


class GuardedScorer(Scorer):
    """`ensemble` near the training prompts, `general` far from them (see module doc)."""

    name = "guarded"
    needs_training = True

    def __init__(self, floor: float = 0.1, k: int = 10, inner_folds: int = 4,
                 max_length: int = 256):
        self.floor, self.k = float(floor), int(k)
        self.inner_folds, self.max_length = int(inner_folds), int(max_length)
        self.topic: Scorer = EnsembleScorer()
        self.general: Scorer = GeneralScorer()
        self.quantiles: np.ndarray | None = None  # (2, Q) topic and general training scores
        self.similarity: np.ndarray | None = None  # (N,) sorted held-out training similarities
        self.keys: np.ndarray | None = None  # (N, 384) float16 training embeddings
        self._keys64: np.ndarray | None = None  # the same as float64, for the gate

    def fit(self, texts, labels, groups=None, weights=None) -> GuardedScorer:
        check_labels(labels, len(texts))
        texts = list(texts)
        self.topic.fit(texts, labels, groups, weights)
        self.general.fit(texts, labels, groups, weights)
        grid = np.linspace(0.0, 1.0, QUANTILES)
        self.quantiles = np.stack([np.quantile(s.score_texts(texts), grid)
                                   for s in (self.topic, self.general)])
        vectors = embed(texts, self.max_length)  # (N, 384)
        fold = folds_of(len(texts), min(self.inner_folds, len(texts)), 0)
        sim = np.zeros(len(texts))
        for f in np.unique(fold):  # each prompt against the prompts of the other inner folds
            sim[fold == f] = neighbour_similarity(vectors[fold == f], vectors[fold != f], self.k)
        self.similarity = np.sort(sim).astype(np.float32)
        self._set_keys(vectors.astype(np.float16))
        return self

    def _set_keys(self, keys: np.ndarray) -> None:
        """The training embeddings: float16 in the artifact, float64 once in memory (not per
        scored prompt: the gate runs on every request the gateway routes)."""
        self.keys, self._keys64 = keys, keys.astype(np.float64)

    def gate(self, texts: Sequence[str]) -> np.ndarray:
        """(N,) trust in the topic scorer: 1 as close as the training prompts usually are, falling
        to 0 below the least similar ones."""
        sim = neighbour_similarity(embed(texts, self.max_length), self._keys64, self.k)
        cdf = np.searchsorted(self.similarity, sim) / len(self.similarity)
        return np.clip(cdf / self.floor, 0.0, 1.0)

    def score_texts(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        grid = np.linspace(0.0, 1.0, QUANTILES)
        topic, general = (np.interp(s.score_texts(texts), q, grid)
                          for s, q in zip((self.topic, self.general), self.quantiles, strict=True))
        a = self.gate(texts)
        return a * topic + (1.0 - a) * general

    def state(self):
        params = {"floor": self.floor, "k": self.k, "inner_folds": self.inner_folds,
                  "max_length": self.max_length}
        arrays = {"quantiles": self.quantiles, "similarity": self.similarity, "keys": self.keys}
        for prefix, scorer in (("topic", self.topic), ("general", self.general)):
            p, a = scorer.state()
            params[prefix] = p
            arrays |= {f"{prefix}.{k}": v for k, v in a.items()}
        return params, arrays

    @classmethod
    def from_state(cls, params, arrays):
        obj = cls(params["floor"], params["k"], params["inner_folds"], params["max_length"])
        obj.quantiles, obj.similarity = arrays["quantiles"], arrays["similarity"]
        obj._set_keys(arrays["keys"])
        for prefix, kind in (("topic", EnsembleScorer), ("general", GeneralScorer)):
            sub = {k[len(prefix) + 1:]: v for k, v in arrays.items()
                   if k.startswith(prefix + ".")}
            setattr(obj, prefix, kind.from_state(params[prefix], sub))
        return obj
