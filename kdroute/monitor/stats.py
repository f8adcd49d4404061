"""Pure statistics of agreement streams: weighted rates with Wilson intervals, and the population
stability index of a score distribution. No I/O, no heavy imports (the gateway imports this).

Shadow rows are sampled with known inclusion probabilities π_i (more samples near the router's
threshold), so a rate is the Horvitz–Thompson-style ratio Σ y_i/π_i / Σ 1/π_i, and its interval
uses Kish's effective sample size n_eff = (Σ w)² / Σ w² in place of n: equal weights give back the
plain rate and n.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist


@dataclass(frozen=True)
class Rate:
    """A (weighted) proportion with its Wilson interval at `confidence`."""

    value: float
    lower: float
    upper: float
    n: int  # observations (rows)
    n_eff: float  # Kish effective sample size (= n for equal weights)
    confidence: float


def wilson_interval(p: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion `p` observed on `n` trials (n may be fractional:
    an effective sample size). n = 0 gives the uninformative (0, 1)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n <= 0:
        return 0.0, 1.0
    z = _z(confidence)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # clamp to [0, 1] and keep p inside: at p = 0 or 1 rounding would otherwise leave it out by
    # an ulp
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


@lru_cache(maxsize=16)
def _z(confidence: float) -> float:
    """The two-sided normal quantile (computed once per level: the detector asks per sample)."""
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def weighted_rate(verdicts: Sequence[float], inclusion_probs: Sequence[float] | None = None,
                  confidence: float = 0.95) -> Rate:
    """The rate of `verdicts` (each 0/1, or a fraction) weighted by 1/π, with its interval.

    Shapes: verdicts (N,), inclusion_probs (N,) in (0, 1] or None (all 1)."""
    n = len(verdicts)
    if inclusion_probs is None:
        weights = [1.0] * n
    else:
        if len(inclusion_probs) != n:
            raise ValueError("verdicts and inclusion_probs must be equally long")
        if any(not 0.0 < p <= 1.0 for p in inclusion_probs):
            raise ValueError("inclusion probabilities must be in (0, 1]")
        weights = [1.0 / p for p in inclusion_probs]
    return rate_from_sums(n, sum(weights), sum(w * y for w, y in zip(weights, verdicts,
                                                                      strict=True)),
                          sum(w * w for w in weights), confidence)


def rate_from_sums(n: int, sum_w: float, sum_wy: float, sum_w2: float,
                   confidence: float = 0.95) -> Rate:
    """`weighted_rate` from its sufficient statistics (n rows, Σw, Σw·y, Σw² with w = 1/π), so
    rates of groups summed in SQL (per hour, per slice) need no rows: sums of groups add up."""
    if n == 0 or sum_w <= 0:
        return Rate(float("nan"), 0.0, 1.0, 0, 0.0, confidence)
    value = sum_wy / sum_w
    n_eff = sum_w * sum_w / sum_w2
    lower, upper = wilson_interval(value, n_eff, confidence)
    return Rate(value, lower, upper, n, n_eff, confidence)


def psi(expected: Sequence[float], actual: Sequence[float], eps: float = 1e-4) -> float:
    """Population stability index Σ (a_i - e_i) ln(a_i / e_i) between two binned distributions
    (counts or shares over the same bins; each is normalised). Bins empty on one side are floored
    at `eps` so the index stays finite. Rules of thumb: < 0.1 stable, 0.1-0.25 moderate shift,
    > 0.25 major shift."""
    if len(expected) != len(actual) or not expected:
        raise ValueError("psi needs two equally long, non-empty bin vectors")
    e_total, a_total = float(sum(expected)), float(sum(actual))
    if e_total <= 0 or a_total <= 0:
        raise ValueError("psi needs some mass on both sides")
    index = 0.0
    for e, a in zip(expected, actual, strict=True):
        e_share, a_share = max(e / e_total, eps), max(a / a_total, eps)
        index += (a_share - e_share) * math.log(a_share / e_share)
    return index
