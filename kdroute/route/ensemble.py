"""`ensemble`: a stacked combination of learned scorers.

Each member is fitted on k-1 folds and scores the held-out fold, which gives honest out-of-fold
member scores for every training prompt; a logistic regression over the members' logits learns the
combination from them; then every member is refitted on all the data. The output is again a
probability, p(teacher needed), so thresholds and calibration work as for any scorer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kdroute.route.learned import check_labels, fit_logistic
from kdroute.route.scorers import Scorer, scorer_class, sigmoid

DEFAULT_MEMBERS = ("embedding", "tfidf", "task_prior")


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


class EnsembleScorer(Scorer):
    """Stacked members (default: embedding, tfidf, task_prior)."""

    name = "ensemble"
    needs_training = True

    def __init__(self, members: Sequence[str] = DEFAULT_MEMBERS, folds: int = 5, seed: int = 0):
        self.member_names = list(members)
        self.folds, self.seed = int(folds), int(seed)
        self.members: list[Scorer] = []
        self.w: np.ndarray | None = None  # (M,)
        self.b = 0.0

    def _member_logits(self, texts: Sequence[str]) -> np.ndarray:
        return np.column_stack([logit(m.score_texts(texts)) for m in self.members])  # (N, M)

    def fit(self, texts, labels, groups=None) -> EnsembleScorer:
        y = check_labels(labels, len(texts))
        texts = list(texts)
        groups = list(groups) if groups is not None else None
        rng = np.random.default_rng(self.seed)
        fold = rng.permutation(len(texts)) % self.folds
        oof = np.zeros((len(texts), len(self.member_names)))
        for f in range(self.folds):
            tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
            if y[tr].min() == y[tr].max():
                continue  # too few positives to fit this fold; it keeps logit 0
            for j, name in enumerate(self.member_names):
                member = scorer_class(name)().fit([texts[i] for i in tr], y[tr],
                                                  [groups[i] for i in tr] if groups else None)
                oof[te, j] = logit(member.score_texts([texts[i] for i in te]))
        self.w, self.b = fit_logistic(oof, y, c=1.0)
        self.members = [scorer_class(n)().fit(texts, y, groups) for n in self.member_names]
        return self

    def score_texts(self, texts: Sequence[str]) -> np.ndarray:
        return sigmoid(self._member_logits(texts) @ self.w + self.b)

    def state(self):
        params = {"members": self.member_names, "folds": self.folds, "seed": self.seed,
                  "b": self.b, "member_params": []}
        arrays = {"w": self.w}
        for j, member in enumerate(self.members):
            p, a = member.state()
            params["member_params"].append(p)
            arrays |= {f"m{j}.{k}": v for k, v in a.items()}
        return params, arrays

    @classmethod
    def from_state(cls, params, arrays):
        obj = cls(params["members"], params["folds"], params["seed"])
        obj.w, obj.b = arrays["w"], float(params["b"])
        for j, (name, p) in enumerate(zip(obj.member_names, params["member_params"], strict=True)):
            prefix = f"m{j}."
            sub = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            obj.members.append(scorer_class(name).from_state(p, sub))
        return obj
