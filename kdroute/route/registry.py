"""Every scorer by name: a plain dict of classes (RouteLLM's `ROUTER_CLS`).

Config validation (`router.scorer`), artifacts and the CLI look names up here. Importing it imports
the scorer modules, which import numpy only: sklearn and torch load when a learned scorer is fitted
or scores its first prompt.
"""

from __future__ import annotations

from kdroute.errors import ConfigError
from kdroute.route.base import Scorer
from kdroute.route.ensemble import (
    MEMBER_CLS,
    EnsembleScorer,
    EnsembleWordsScorer,
    GeneralScorer,
)
from kdroute.route.guarded import GuardedScorer
from kdroute.route.scorers import RandomScorer
from kdroute.route.stacked import StackedScorer

# every scorer an ensemble may combine, plus the combinations and the evaluation baseline
SCORER_CLS: dict[str, type[Scorer]] = MEMBER_CLS | {
    cls.name: cls for cls in (RandomScorer, EnsembleScorer, EnsembleWordsScorer,
                                      GeneralScorer, GuardedScorer, StackedScorer)
}
# Scores that need the true labels: computed by `kdroute route eval`, never used to route.
EVAL_ONLY = ("random", "oracle")


def scorer_class(name: str) -> type[Scorer]:
    cls = SCORER_CLS.get(name)
    if cls is None:
        raise ConfigError(f"router.scorer: unknown scorer {name!r}; known: "
                          f"{', '.join(SCORER_CLS)}")
    return cls


def build_scorer(name: str, **params) -> Scorer:
    """A fresh (untrained) scorer by registry name."""
    return scorer_class(name)(**params)
