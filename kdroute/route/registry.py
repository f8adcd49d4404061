"""Every scorer by name: a plain dict of classes (RouteLLM's `ROUTER_CLS`).

Config validation (`router.scorer`), artifacts and the CLI look names up here. Importing it imports
the scorer modules, which import numpy only: sklearn and torch load when a learned scorer is fitted
or scores its first prompt.
"""

from __future__ import annotations

import inspect
import json

from kdroute.errors import ConfigError, InputError
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


def scorer_params(cls: type[Scorer]) -> list[str]:
    """The keyword arguments `cls(...)` accepts, through any `**params` passed up to a base."""
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        sig = inspect.signature(klass.__init__)
        names += [p.name for p in sig.parameters.values()
                  if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
                  and p.name not in names]
        if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            break
    return names


def parse_params(name: str, pairs: list[str] | None) -> dict:
    """`--param KEY=VALUE` pairs for scorer `name`: VALUE as JSON (a number, true/false, a list),
    else as text. An unknown key or a value its scorer refuses is a one-line InputError."""
    if not pairs:
        return {}
    known = scorer_params(scorer_class(name))
    params = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--param {pair}: write KEY=VALUE, e.g. --param c=0.1")
        if key not in known:
            raise InputError(f"--param {pair}: {name} has no parameter {key!r}; it takes "
                             f"{', '.join(known) or 'none'}")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    try:
        build_scorer(name, **params)
    except (TypeError, ValueError) as exc:
        raise InputError(f"--param: {name} refuses {params}: {exc}") from exc
    return params
