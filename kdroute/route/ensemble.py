"""`ensemble`: the mean percentile of several scorers.

Each member is fitted on the training data; its scores on that data define its empirical
distribution (stored as quantiles). A new prompt's ensemble score is the mean over members of the
percentile its member score reaches in that member's distribution, which is a rank average: no
member dominates by having a wider scale, and no weights are fitted (fitted stacking weights were
noisier on 850 GSM8K prompts than equal ones). The score is in [0, 1] and grows with every
member's p(teacher needed); the calibrated threshold turns it into a routing decision.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kdroute.errors import ConfigError
from kdroute.route.base import Scorer
from kdroute.route.learned import (
    DifficultyScorer,
    EmbeddingScorer,
    EmbeddingWithinScorer,
    KnnScorer,
    TaskPriorScorer,
    TfidfLengthScorer,
    TfidfScorer,
    TfidfWordsScorer,
    check_labels,
)
from kdroute.route.scorers import HeuristicScorer, LengthScorer

# The scorers an ensemble may combine (not ensembles themselves: no cycle with the registry).
MEMBER_CLS: dict[str, type[Scorer]] = {
    cls.name: cls for cls in (HeuristicScorer, LengthScorer, DifficultyScorer, EmbeddingScorer,
                              EmbeddingWithinScorer, TfidfScorer, TfidfWordsScorer,
                              TfidfLengthScorer, KnnScorer, TaskPriorScorer)
}


def members_state(members: Sequence[Scorer]) -> tuple[list, dict]:
    """The members' params (a list) and arrays (keys prefixed `m<j>.`) for an artifact."""
    params, arrays = [], {}
    for j, member in enumerate(members):
        p, a = member.state()
        params.append(p)
        arrays |= {f"m{j}.{k}": v for k, v in a.items()}
    return params, arrays


def members_from_state(names: Sequence[str], params: list, arrays: dict) -> list[Scorer]:
    """The members saved by `members_state`, rebuilt by name."""
    members = []
    for j, (name, p) in enumerate(zip(names, params, strict=True)):
        prefix = f"m{j}."
        sub = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        members.append(member_class(name).from_state(p, sub))
    return members


def member_class(name: str) -> type[Scorer]:
    if name not in MEMBER_CLS:
        raise ConfigError(f"unknown ensemble member {name!r}; known: {', '.join(MEMBER_CLS)}")
    return MEMBER_CLS[name]

# Picked on the RouteLLM data (benchmarks/bench_route_routellm.py): the embedding carries topic and
# phrasing, character n-grams carry numbers and symbols, and length is a robust difficulty prior
# that the linear heads underuse (best on GSM8K); word n-grams carry subject vocabulary (better
# than length on MMLU, where length says little), and neighbours in embedding space add local
# evidence that a linear head smooths away (+0.002 APGR on MMLU in trials).
DEFAULT_MEMBERS = ("embedding", "tfidf", "length")
WORDS_MEMBERS = ("embedding", "tfidf", "tfidf_words", "knn")
# Members that know no task's label rate (issue 15): length, the lexical difficulty features and
# the embedding's within-task difficulty directions; each ranked above length on traffic of
# other subjects or data sets in some split, and their rank average was the steadiest.
GENERAL_MEMBERS = ("length", "difficulty", "embedding_within")
QUANTILES = 257


class EnsembleScorer(Scorer):
    """Rank average of members (default: embedding, tfidf, length)."""

    name = "ensemble"
    needs_training = True

    def __init__(self, members: Sequence[str] = DEFAULT_MEMBERS):
        self.member_names = list(members)
        self.members: list[Scorer] = []
        self.quantiles: np.ndarray | None = None  # (M, Q) sorted member scores on training data

    def fit(self, texts, labels, groups=None, weights=None) -> EnsembleScorer:
        check_labels(labels, len(texts))
        texts = list(texts)
        self.members = [member_class(n)().fit(texts, labels, groups, weights)
                        for n in self.member_names]
        grid = np.linspace(0.0, 1.0, QUANTILES)
        self.quantiles = np.stack([np.quantile(m.score_texts(texts), grid) for m in self.members])
        return self

    def score_texts(self, texts: Sequence[str]) -> np.ndarray:
        grid = np.linspace(0.0, 1.0, QUANTILES)
        pct = [np.interp(m.score_texts(texts), q, grid)
               for m, q in zip(self.members, self.quantiles, strict=True)]
        return np.mean(pct, axis=0)  # (N,)

    def state(self):
        member_params, arrays = members_state(self.members)
        return ({"members": self.member_names, "member_params": member_params},
                {"quantiles": self.quantiles, **arrays})

    @classmethod
    def from_state(cls, params, arrays):
        obj = cls(params["members"])
        obj.quantiles = arrays["quantiles"]
        obj.members.extend(members_from_state(obj.member_names, params["member_params"], arrays))
        return obj


class EnsembleWordsScorer(EnsembleScorer):
    """Rank average of embedding, tfidf, tfidf_words and knn (for many-subject traffic like MMLU)."""

    name = "ensemble_words"

    def __init__(self, members: Sequence[str] = WORDS_MEMBERS):
        super().__init__(members)


class GeneralScorer(EnsembleScorer):
    """Rank average of length, difficulty and embedding_within: members that learn what makes a
    prompt hard, not which task it is from, for traffic unlike the training data (issue 15)."""

    name = "general"

    def __init__(self, members: Sequence[str] = GENERAL_MEMBERS):
        super().__init__(members)
