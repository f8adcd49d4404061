"""Which requests get a shadow (or probe) evaluation, and with what probability.

Stratified by router score: a request whose score lies within `near_band` of the threshold is
sampled `near_boost` times as often as one far from it, because that is where routing mistakes
happen. The overall rate stays `rate`: the sampler keeps a running share of near requests and
scales both strata so that rate = share·π_near + (1 - share)·π_far. Each sampled request's π is
fixed before its coin is tossed and stored with the row, so a rate weighted by 1/π is unbiased
whatever the traffic mix does (Horvitz–Thompson).
"""

from __future__ import annotations

import random
import threading


class StratifiedSampler:
    def __init__(self, rate: float, near_band: float = 0.1, near_boost: float = 1.0,
                 seed: int | None = None, prior_near_share: float = 0.2, memory: int = 1000):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"sampling rate must be in [0, 1], got {rate}")
        self.rate = rate
        self.near_band = near_band
        self.near_boost = max(1.0, near_boost)
        self._rng = random.Random(seed)
        self._near_share = prior_near_share
        self._alpha = 1.0 / memory  # exponential forgetting of the traffic mix
        self._lock = threading.Lock()

    def is_near(self, score: float | None, threshold: float | None) -> bool:
        return score is not None and threshold is not None \
            and abs(score - threshold) <= self.near_band

    def inclusion_prob(self, near: bool) -> float:
        """π of a request in this stratum, given the traffic mix seen so far."""
        if self.rate <= 0:
            return 0.0
        share, boost = self._near_share, self.near_boost
        far = self.rate / (share * boost + (1 - share))
        if far * boost <= 1.0:
            return far * boost if near else far
        # the near stratum is sampled entirely; the far one makes up the rest of the rate, but
        # never less than rate / boost (every request keeps a chance to be seen)
        if near:
            return 1.0
        rest = (self.rate - share) / (1 - share) if share < 1 else self.rate
        return min(1.0, max(rest, self.rate / boost))

    def sample(self, score: float | None = None, threshold: float | None = None) -> float | None:
        """π if this request is sampled, None if not. Updates the traffic mix."""
        near = self.is_near(score, threshold)
        with self._lock:
            prob = self.inclusion_prob(near)
            self._near_share += self._alpha * (float(near) - self._near_share)
            hit = prob > 0 and self._rng.random() < prob
        return prob if hit else None
