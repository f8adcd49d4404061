"""Issue 14's fast paths keep their behaviour: the numpy tfidf score equals the scipy one, and
inline scoring (chosen at start-up for a cheap router) routes exactly as the threaded path.
Streaming, cancellation on disconnect, retries, fallback and one row per request are covered on
the same stack (uvloop, httptools, orjson, one watcher task per request) by test_gateway*.py,
whose servers run with `kdroute serve`'s own uvicorn options."""

import gateway_fixtures as fx
import httpx
import numpy as np
from gateway_fixtures import EASY, HARD, KEYS
from hypothesis import given, settings
from hypothesis import strategies as st

from kdroute.route.learned import TfidfScorer
from kdroute.route.scorers import sigmoid

fakes, gw, _reset_fakes = fx.fakes, fx.gw, fx._reset_fakes  # this module's fixtures
WORDS = "prove the integral of hello what is list why explain sum 42 x^2 ∫ é".split()


def _scorer(lexical_weight: float = 0.0) -> TfidfScorer:
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(2, 20))) for _ in range(300)]
    labels = np.array([float("prove" in t) for t in texts])
    return TfidfScorer(lexical_weight=lexical_weight, min_df=1).fit(texts, labels)


SCORER = _scorer()


@settings(max_examples=60, deadline=None, database=None)
@given(texts=st.lists(st.text(max_size=80) | st.sampled_from(WORDS), min_size=1, max_size=5))
def test_fast_tfidf_score_equals_the_sparse_matrix_one(texts):
    reference = sigmoid(SCORER.features(texts) @ SCORER.w + SCORER.b)
    assert np.allclose(SCORER.score_texts(texts), reference, rtol=1e-12, atol=1e-12)


def test_lexical_weight_keeps_the_full_feature_path():
    scorer = _scorer(lexical_weight=0.5)
    texts = ["prove that 2 + 2 = 4", "hello"]
    reference = sigmoid(scorer.features(texts) @ scorer.w + scorer.b)
    assert np.allclose(scorer.score_texts(texts), reference)


def test_inline_scoring_routes_like_the_threaded_path(gw):
    gateway = gw.app.state.gateway
    seen = {}
    for inline in (False, True):
        gateway.inline_scoring = inline
        for name, messages in (("easy", EASY), ("hard", HARD)):
            resp = httpx.post(gw.v1 + "/chat/completions", timeout=30,
                              headers={"authorization": f"Bearer {KEYS[0]}"},
                              json={"model": "kdroute/auto", "messages": messages})
            row = gw.row(resp.headers["x-kdroute-request-id"])
            seen[inline, name] = (row["served_role"], row["router_score"])
    gateway.inline_scoring = False
    assert seen[False, "easy"] == seen[True, "easy"] == ("student", 0.1)
    assert seen[False, "hard"] == seen[True, "hard"] == ("teacher", 0.9)
