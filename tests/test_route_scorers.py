"""Every learned scorer fits, ranks a learnable signal, and round-trips through an artifact;
`kdroute route eval` compares scorers with random and oracle."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from kdroute.cli import app
from kdroute.route import Router
from kdroute.route.artifact import Artifact, load_artifact, save_artifact
from kdroute.route.scorers import build_scorer
from tests.test_route_train import synthetic_pairs, write_csv

LEARNED = ("tfidf", "tfidf_words", "embedding", "knn", "task_prior", "ensemble", "ensemble_words")


@pytest.fixture(scope="module")
def pairs():
    rows = synthetic_pairs(n=90, seed=3)
    texts = [r[0] for r in rows]
    labels = np.array([int(r[2] == 1 and r[1] == 0) for r in rows])
    groups = ["math" if r[3] else "facts" for r in rows]
    return texts, labels, groups


@pytest.mark.parametrize("name", LEARNED)
def test_learned_scorer_fits_and_round_trips(name, pairs, tmp_path):
    texts, labels, groups = pairs
    scorer = build_scorer(name).fit(texts, labels, groups)
    probe = ["A shop has 12 boxes of 30 pens. It sells 7 pens each day for 9 days, then buys "
             "40 more. How many remain?", "What is the capital of country number 7?"]
    scores = scorer.score_texts(probe)
    assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 1))
    assert scores[0] > scores[1]  # the multi-step word problem needs the teacher more
    path = save_artifact(Artifact(scorer, 0.5, teacher="T", student="S"), tmp_path / "a.json")
    loaded = load_artifact(path)
    assert loaded.scorer.name == name
    assert loaded.scorer.score_texts(probe) == pytest.approx(scores, rel=1e-5, abs=1e-6)
    router = Router(loaded.scorer, 0.5, loaded.version)
    conv = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"},
            {"role": "user", "content": probe[0]}]
    assert 0 <= router.score_one(conv) <= 1


def test_eval_compares_scorers_with_random_and_oracle(tmp_path):
    path = write_csv(tmp_path / "rec.csv", synthetic_pairs(n=150, seed=4))
    res = CliRunner().invoke(app, ["route", "eval", "--data", str(path), "--scorers",
                                   "heuristic,tfidf", "--folds", "3", "--bootstrap", "100",
                                   "--plot", str(tmp_path / "curves.png"),
                                   "--json", str(tmp_path / "eval.json")],
                             env={"KDROUTE_STORE_PATH": str(tmp_path / "l.db")})
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "eval.json").read_text())
    s = report["scorers"]
    assert set(s) == {"heuristic", "tfidf", "random", "oracle"}
    assert s["random"]["apgr"] == pytest.approx(0.5)
    assert s["oracle"]["apgr"] >= max(v["apgr"] for v in s.values())
    assert s["tfidf"]["apgr_lo"] <= s["tfidf"]["apgr_hi"]
    assert "apgr_cost" in s["tfidf"]  # config prices make the student not free
    assert (tmp_path / "curves.png").stat().st_size > 1000
