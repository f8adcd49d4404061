"""`stacked`: members combined by weights learned on held-out groups, shrunk toward a difficulty
prior when a prompt is far from the training prompts.

Why: n-gram and embedding heads learn each task's label rate, which is noise on a task they never
saw (issue 15: on leave-subjects-out MMLU they ranked below prompt length). So the combination is
learned the way traffic arrives. Inside `fit`, every member is cross-validated over whole groups of
the training data (random folds when there is one group), giving out-of-group member scores; with
them comes each held-out prompt's distance from the prompts its fold trained on (mean cosine
similarity of its k nearest neighbours, MiniLM embeddings). A logistic stacker then learns, from
percentiles of the member scores, the similarity, and their products, how much to trust each member
at each distance: near the training prompts the topic heads can win, far away the difficulty
features (length, numbers, reasoning words) take over. All of it is tuned on the training data
only. At scoring time the members are the ones refitted on all of it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kdroute.route.base import Scorer, sigmoid
from kdroute.route.ensemble import member_class, members_from_state, members_state
from kdroute.route.folds import folds_of, group_folds_of
from kdroute.route.learned import check_labels, embed, fit_logistic

# Difficulty features and length generalise to new tasks; the embedding head and neighbours carry
# topic, which the stacker trusts only as far as held-out groups showed it was worth. Character
# n-grams (`tfidf`) are left out: fitted on GSM8K they rank MMLU below length (0.508 vs 0.552
# APGR, benchmarks/results/route_generalise.json), and they cost most of a fit.
DEFAULT_MEMBERS = ("difficulty", "length", "embedding", "knn")
QUANTILES = 257


def neighbour_similarity(queries: np.ndarray, keys: np.ndarray, k: int) -> np.ndarray:
    """(N,) mean cosine similarity of each query's k nearest keys ((N, D), (M, D) unit rows)."""
    out = np.empty(len(queries))
    for start in range(0, len(queries), 1024):  # bounded (1024, M) similarity blocks
        sims = queries[start:start + 1024] @ keys.T
        k_ = min(k, sims.shape[1])
        out[start:start + 1024] = np.partition(sims, -k_, axis=1)[:, -k_:].mean(1)
    return out


class StackedScorer(Scorer):
    """Out-of-group stacking of members with an embedding-distance gate (see module doc)."""

    name = "stacked"
    needs_training = True

    def __init__(self, members: Sequence[str] = DEFAULT_MEMBERS, inner_folds: int = 4,
                 k: int = 10, c: float = 1.0, max_length: int = 256):
        self.member_names = list(members)
        self.inner_folds, self.k, self.c = int(inner_folds), int(k), float(c)
        self.max_length = int(max_length)
        self.members: list[Scorer] = []
        self.quantiles: np.ndarray | None = None  # (M, Q) out-of-group member scores
        self.sim_mean, self.sim_std = 0.0, 1.0
        self.sim_lo, self.sim_hi = -np.inf, np.inf  # standardised similarity seen in training
        self.keys: np.ndarray | None = None  # (N, 384) float16 training embeddings
        self.w: np.ndarray | None = None
        self.b = 0.0

    def _inner_folds(self, groups: Sequence[str] | None, n: int, seed: int = 0) -> np.ndarray:
        if groups is not None and len(set(groups)) >= self.inner_folds:
            return group_folds_of(groups, self.inner_folds, seed)
        return folds_of(n, self.inner_folds, seed)

    def _features(self, member_scores: np.ndarray, sim: np.ndarray) -> np.ndarray:
        """(N, 2M + 1): member percentiles (centred), the similarity (standardised), products."""
        grid = np.linspace(0.0, 1.0, QUANTILES)
        pct = np.stack([np.interp(member_scores[:, j], q, grid) - 0.5
                        for j, q in enumerate(self.quantiles)], 1)  # (N, M)
        # clipped to the range seen in training: far-off prompts get the gate's far end, never
        # an extrapolated product that no held-out fold vouched for
        s = np.clip((sim - self.sim_mean) / self.sim_std, self.sim_lo, self.sim_hi)[:, None]
        return np.hstack([pct, s, pct * s])

    def _fit_stacker(self, x: np.ndarray, y: np.ndarray, weights) -> tuple[np.ndarray, float]:
        """Logistic stacker whose member weights are >= 0 (Breiman's non-negative stacking):
        every member predicts "teacher needed", so none may count against it; collinear members
        otherwise trade signs and the fit follows noise on small data. A member whose weight
        comes out negative is dropped (its main and gated columns) and the rest refitted."""
        m = len(self.member_names)
        keep = np.ones(m, dtype=bool)
        while True:
            cols = np.r_[np.flatnonzero(keep), m, m + 1 + np.flatnonzero(keep)]
            w_sub, b = fit_logistic(x[:, cols], y, self.c, weights)
            w = np.zeros(x.shape[1])
            w[cols] = w_sub
            negative = keep & (w[:m] < 0)
            if not negative.any() or keep.sum() == 1:
                return w, b
            keep &= ~negative

    def fit(self, texts, labels, groups=None, weights=None) -> StackedScorer:
        y = check_labels(labels, len(texts))
        texts = list(texts)
        weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        vectors = embed(texts, self.max_length)  # (N, 384)
        fold = self._inner_folds(groups, len(texts))
        oof = np.zeros((len(texts), len(self.member_names)))  # out-of-group member scores
        sim = np.zeros(len(texts))
        for f in np.unique(fold):
            tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
            sub_groups = None if groups is None else [groups[i] for i in tr]
            for j, name in enumerate(self.member_names):
                member = member_class(name)().fit([texts[i] for i in tr], y[tr], sub_groups,
                                                  None if weights is None else weights[tr])
                oof[te, j] = member.score_texts([texts[i] for i in te])
            sim[te] = neighbour_similarity(vectors[te], vectors[tr], self.k)
        grid = np.linspace(0.0, 1.0, QUANTILES)
        self.quantiles = np.stack([np.quantile(oof[:, j], grid) for j in range(oof.shape[1])])
        self.sim_mean, self.sim_std = float(sim.mean()), float(sim.std() or 1.0)
        z = (sim - self.sim_mean) / self.sim_std
        self.sim_lo, self.sim_hi = float(z.min()), float(z.max())
        self.w, self.b = self._fit_stacker(self._features(oof, sim), y, weights)
        self.members = [member_class(n)().fit(texts, y, groups, weights)
                        for n in self.member_names]
        self.keys = vectors.astype(np.float16)
        return self

    def score_texts(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        scores = np.stack([m.score_texts(texts) for m in self.members], 1)  # (N, M)
        sim = neighbour_similarity(embed(texts, self.max_length),
                                   self.keys.astype(np.float64), self.k)
        return sigmoid(self._features(scores, sim) @ self.w + self.b)

    def state(self):
        params = {"members": self.member_names, "inner_folds": self.inner_folds, "k": self.k,
                  "c": self.c, "max_length": self.max_length, "b": self.b,
                  "sim_mean": self.sim_mean, "sim_std": self.sim_std, "sim_lo": self.sim_lo,
                  "sim_hi": self.sim_hi}
        params["member_params"], arrays = members_state(self.members)
        return params, {"quantiles": self.quantiles, "keys": self.keys, "w": self.w, **arrays}

    @classmethod
    def from_state(cls, params, arrays):
        obj = cls(params["members"], params["inner_folds"], params["k"], params["c"],
                  params["max_length"])
        obj.b, obj.sim_mean, obj.sim_std = params["b"], params["sim_mean"], params["sim_std"]
        obj.sim_lo, obj.sim_hi = params["sim_lo"], params["sim_hi"]
        obj.quantiles, obj.keys, obj.w = arrays["quantiles"], arrays["keys"], arrays["w"]
        obj.members.extend(members_from_state(obj.member_names, params["member_params"], arrays))
        return obj
