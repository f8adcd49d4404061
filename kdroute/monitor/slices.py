"""The slices the monitor watches: the whole stream ("all"), router-score buckets, task families.

A request's router-score bucket is `score:0.25-0.50` (equal-width buckets of [0, 1]); it is
derived from the stored router score, so it needs no column of its own. Its task family
(`family:arith`) comes from a light prompt classifier learned from the ledger's bench samples
(prompt -> family): the skill suite and lm-eval tasks label every prompt with its family, and a
TF-IDF + logistic-regression model learns the boundary in a second on a few thousand prompts and
answers in well under a millisecond. A prompt it is unsure of (top probability below
`min_confidence`) gets no family slice: it still counts in "all" and its score bucket.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence

ALL = "all"


def score_bucket(score: float | None, buckets: int) -> str | None:
    """`score:0.25-0.50` for a router score, None without one."""
    if score is None or buckets < 1:
        return None
    i = min(int(max(score, 0.0) * buckets), buckets - 1)
    return f"score:{i / buckets:.2f}-{(i + 1) / buckets:.2f}"


def slices_of(slice_: str | None, router_score: float | None, buckets: int) -> tuple[str, ...]:
    """Every slice an evaluation or request belongs to: "all", its family slice, its bucket."""
    out = [ALL]
    if slice_ and slice_ != ALL:
        out.append(slice_)
    bucket = score_bucket(router_score, buckets)
    if bucket is not None:
        out.append(bucket)
    return tuple(out)


class FamilyClassifier:
    """prompt -> "family:<name>" or None (unsure). Thread-safe; remembers recent prompts."""

    def __init__(self, min_confidence: float = 0.6, cache_size: int = 10000):
        self.min_confidence = min_confidence
        self.families: list[str] = []
        self._pipeline = None
        self._cache: OrderedDict[bytes, str | None] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def fit(self, prompts: Sequence[str], families: Sequence[str]) -> FamilyClassifier:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        pipeline = make_pipeline(
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=2, max_features=50000,
                            sublinear_tf=True),
            LogisticRegression(max_iter=1000, C=4.0))
        pipeline.fit(list(prompts), list(families))
        self._pipeline = pipeline
        self.families = [str(c) for c in pipeline.classes_]
        return self

    def predict(self, text: str) -> str | None:
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        proba = self._pipeline.predict_proba([text])[0]  # (families,)
        best = int(proba.argmax())
        family = f"family:{self.families[best]}" if proba[best] >= self.min_confidence else None
        with self._lock:
            self._cache[key] = family
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return family


def train_family_classifier(examples: Sequence[tuple[str, str]], min_per_family: int = 5
                            ) -> FamilyClassifier | None:
    """A classifier from (prompt, family) pairs, or None when fewer than two families have
    `min_per_family` prompts each (nothing to tell apart)."""
    counts: dict[str, int] = {}
    for _, family in examples:
        counts[family] = counts.get(family, 0) + 1
    keep = {f for f, n in counts.items() if n >= min_per_family}
    if len(keep) < 2:
        return None
    pairs = [(p, f) for p, f in examples if f in keep]
    return FamilyClassifier().fit([p for p, _ in pairs], [f for _, f in pairs])
