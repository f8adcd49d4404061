"""How items are held out: random folds, or folds of whole groups (tasks, subjects, files)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kdroute.errors import InputError


def folds_of(n: int, k: int, seed: int) -> np.ndarray:
    """(N,) fold index of each item: a seeded permutation dealt round-robin."""
    return np.random.default_rng(seed).permutation(n) % k


def group_folds_of(groups: Sequence[str], k: int, seed: int) -> np.ndarray:
    """(N,) fold index of each item with whole groups held out: groups in a seeded order, the
    largest first, each into the fold with the fewest items so far (sizes stay close)."""
    names, inverse, counts = np.unique(np.asarray(groups, dtype=str), return_inverse=True,
                                       return_counts=True)
    if len(names) < k:
        raise InputError(f"grouped cross-validation needs at least {k} groups for {k} folds "
                         f"(found {len(names)}: {', '.join(names[:5])})")
    order = np.random.default_rng(seed).permutation(len(names))
    order = order[np.argsort(-counts[order], kind="stable")]
    size, of_group = np.zeros(k), np.zeros(len(names), dtype=int)
    for g in order:
        of_group[g] = int(np.argmin(size))
        size[of_group[g]] += counts[g]
    return of_group[inverse]
