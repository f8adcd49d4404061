"""The difficulty router: a scorer giving p(teacher needed) in [0, 1] plus a threshold.

`load_router(settings)` is what the gateway calls once at start-up; `Router.route(conversation)`
then answers ("teacher" | "student", score) per request. Scores at or above the threshold go to the
teacher. Only light imports here: learned scorers import sklearn / sentence-transformers when they
are built or loaded, never when this package is imported.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kdroute.errors import ConfigError
from kdroute.route.features import conversation_text

if TYPE_CHECKING:
    from kdroute.config import Settings
    from kdroute.route.artifact import Artifact
    from kdroute.route.base import Scorer

__all__ = ["Router", "load_router", "conversation_text"]

Conversation = Sequence[Mapping[str, Any]] | str


class Router:
    """A scorer plus a threshold, with an LRU cache of scores for repeated prompts.

    Thread-safe: the cache is guarded by a lock; scoring itself runs outside it, so two threads
    may occasionally score the same new prompt twice (harmless, same result).
    """

    def __init__(self, scorer: Scorer, threshold: float, version: str,
                 cache_size: int = 10000, artifact: Artifact | None = None):
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"router threshold must be in [0, 1] (got {threshold})")
        self.scorer = scorer
        self.scorer_name: str = scorer.name
        self.threshold: float = float(threshold)
        self.version: str = version
        self.cache_size = int(cache_size)
        self.artifact = artifact
        self._cache: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Router({self.scorer_name!r}, threshold={self.threshold:.4f}, {self.version!r})"

    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def score(self, conversations: Sequence[Conversation]) -> list[float]:
        """p(teacher needed) per conversation; cache misses are scored in one batch."""
        texts = [conversation_text(c) for c in conversations]
        keys = [self._key(t) for t in texts]
        out: list[float | None] = [None] * len(texts)
        with self._lock:
            for i, key in enumerate(keys):
                if key in self._cache:
                    self._cache.move_to_end(key)
                    out[i] = self._cache[key]
        missing = [i for i, v in enumerate(out) if v is None]
        if missing:
            fresh = self.scorer.score_texts([texts[i] for i in missing])
            with self._lock:
                for i, value in zip(missing, fresh, strict=True):
                    out[i] = min(1.0, max(0.0, float(value)))
                    if self.cache_size > 0:
                        self._cache[keys[i]] = out[i]
                        self._cache.move_to_end(keys[i])
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return [float(v) for v in out]  # type: ignore[arg-type]

    def score_one(self, conversation: Conversation) -> float:
        """p(teacher needed) for one conversation (cached)."""
        return self.score([conversation])[0]

    def route(self, conversation: Conversation, threshold: float | None = None
              ) -> tuple[str, float]:
        """("teacher" | "student", score): teacher when score >= threshold."""
        s = self.score_one(conversation)
        t = self.threshold if threshold is None else threshold
        return ("teacher" if s >= t else "student"), s

    def cache_info(self) -> dict[str, int]:
        with self._lock:
            return {"size": len(self._cache), "max_size": self.cache_size}


def router_from_artifact(artifact: Artifact, cache_size: int = 10000) -> Router:
    return Router(artifact.scorer, artifact.threshold, artifact.version, cache_size, artifact)


def load_router(settings: Settings) -> Router:
    """The configured router: `router.artifact` if set, else the no-training `router.scorer`."""
    cfg = settings.router
    if cfg.artifact:
        from kdroute.route.artifact import load_artifact

        return router_from_artifact(load_artifact(settings.path(cfg.artifact)), cfg.cache_size)
    from kdroute.route.registry import scorer_class

    cls = scorer_class(cfg.scorer)
    if cls.needs_training:
        raise ConfigError(
            f"router.scorer = {cfg.scorer!r} must be trained: run `kdroute route train "
            f"--scorer {cfg.scorer}` and set router.artifact to the file it writes")
    if cfg.scorer in ("random",):
        raise ConfigError(f"router.scorer = {cfg.scorer!r} is for evaluation only; use heuristic")
    return Router(cls(), cfg.threshold, f"{cfg.scorer}-builtin", cfg.cache_size)
