"""Every learned scorer fits, ranks a learnable signal, and round-trips through an artifact;
`kdroute route eval` compares scorers with random and oracle."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from kdroute.cli import app
from kdroute.errors import InputError
from kdroute.route import Router
from kdroute.route.artifact import Artifact, load_artifact, save_artifact
from kdroute.route.data import make_labels
from kdroute.route.learned import check_labels, fit_logistic
from kdroute.route.registry import build_scorer
from tests.test_route_train import synthetic_pairs, write_csv

LEARNED = ("tfidf", "tfidf_words", "tfidf_length", "embedding", "knn", "task_prior", "ensemble",
           "ensemble_words", "difficulty", "stacked", "general", "guarded")


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


def test_expected_gain_labels_are_soft_and_order_the_outcomes():
    qs, qt = np.array([0, 1, 1, 0, 0.25]), np.array([1, 0, 1, 0, 0.75])
    y = make_labels(qs, qt, "expected_gain")
    assert y.tolist() == [1.0, 0.0, 0.5, 0.5, 0.75]
    assert make_labels(qs, qt).tolist() == [1, 0, 0, 0, 1]  # the binary rule ignores the sign


def test_soft_logistic_equals_the_plain_fit_on_binary_labels():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    y = (x[:, 0] + rng.normal(size=200) > 0).astype(int)
    w, b = fit_logistic(x, y, 0.5)
    plain = LogisticRegression(C=0.5, max_iter=3000).fit(x, y)
    assert w == pytest.approx(plain.coef_[0], rel=1e-4, abs=1e-6)
    assert b == pytest.approx(plain.intercept_[0], rel=1e-4, abs=1e-6)


def test_expected_gain_ranks_student_only_prompts_below_ties():
    """Binary labels lump "only the student is right" with ties; the soft target separates them."""
    rng = np.random.default_rng(1)
    kinds = {"teacher": (0, 1), "tie": (1, 1), "student": (1, 0)}  # (student right, teacher right)
    words = {"teacher": "integral", "tie": "capital", "student": "rhyme"}
    texts, qs, qt = [], [], []
    for i in range(120):
        kind = list(kinds)[i % 3]
        texts.append(f"question {rng.integers(1000)} about the {words[kind]} of item {i}")
        qs.append(kinds[kind][0])
        qt.append(kinds[kind][1])
    probe = [f"question 5 about the {words[k]} of item 999" for k in kinds]
    soft = build_scorer("tfidf_words").fit(texts, make_labels(qs, qt, "expected_gain"))
    s_teacher, s_tie, s_student = soft.score_texts(probe)
    assert s_teacher > s_tie > s_student
    assert s_tie == pytest.approx(0.5, abs=0.15)  # calibrated: a tie is worth no gain


@pytest.mark.parametrize("labels, message", [
    ([0.5, 0.5, 0.5], "no positive labels"), ([0.2, 1.4, 0.0], r"in \[0, 1\]"),
    ([1.0, 1.0, 1.0], "no negative labels")])
def test_bad_soft_labels_are_input_errors(labels, message):
    with pytest.raises(InputError, match=message):
        check_labels(np.array(labels), 3)


@pytest.mark.parametrize("name", ["tfidf", "tfidf_words", "tfidf_length"])
def test_fast_tfidf_score_equals_the_sparse_matrix_path(name):
    """The gateway's numpy path over each row's hashed non-zeros gives the score of the full
    feature matrix (TF-IDF block stacked with the zero-weight lexical block) times the weights."""
    from kdroute.route.base import sigmoid

    rows = synthetic_pairs(n=300, seed=11)
    texts = [r[0] for r in rows]
    scorer = build_scorer(name).fit(texts, make_labels(np.array([r[1] for r in rows]),
                                                       np.array([r[2] for r in rows]),
                                                       "expected_gain"))
    rng = np.random.default_rng(0)
    probes = texts + ["", "???", "x" * 5000, "naïve café ☕ 12 + 7 = ?"] + [
        " ".join(rng.choice(["pens", "boxes", "7", "why", "capital", "sells"], 12))
        for _ in range(200)]
    assert scorer.lexical_weight == 0.0  # the default: the fast path is the one taken
    fast = scorer.score_texts(probes)
    sparse = sigmoid(scorer.features(probes) @ scorer.w + scorer.b)
    assert len(set(np.round(fast, 6))) > 10  # the probes get different scores
    np.testing.assert_allclose(fast, sparse, rtol=0, atol=1e-9)


def _templated(rng: np.random.Generator, n: int) -> tuple[list[str], np.ndarray]:
    """The demo suite's shape: reversing a word is hard for the student from 7 letters on,
    counting its letters is easy at every length (labels: teacher needed)."""
    texts, labels = [], []
    for i in range(n):
        word = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(2, 13)))
        if i % 2:
            texts.append(f"Reverse the letters of {word}.")
            labels.append(float(len(word) >= 7))
        else:
            texts.append(f"How many letters are in {word}?")
            labels.append(0.0)
    return texts, np.array(labels)


def test_length_slopes_rank_length_within_a_template_only():
    """`tfidf_length` learns that a long word is hard to reverse while counting stays easy;
    plain `tfidf` gives the reverse template one rate whatever the word's length."""
    texts, labels = _templated(np.random.default_rng(5), 600)
    probe_texts, probe_labels = _templated(np.random.default_rng(6), 400)
    reverse = np.array(["Reverse" in t for t in probe_texts])

    def reverse_auc(name):
        from sklearn.metrics import roc_auc_score

        scores = build_scorer(name).fit(texts, labels).score_texts(probe_texts)
        return roc_auc_score(probe_labels[reverse], scores[reverse]), scores

    auc_length, scores = reverse_auc("tfidf_length")
    auc_plain, _ = reverse_auc("tfidf")
    assert auc_length > 0.95 and auc_length > auc_plain + 0.2
    long_count = [s for t, s in zip(probe_texts, scores, strict=True)
                  if "How many" in t and len(t) > 35]
    long_reverse = scores[reverse & (probe_labels == 1)]
    assert max(long_count) < np.median(long_reverse)  # counting long words stays student work


def test_a_tfidf_artifact_of_another_width_is_refused():
    """An artifact whose weights do not match its declared features is an error, not a
    silently wrong score (e.g. length slopes declared without their weights)."""
    texts, labels = _templated(np.random.default_rng(7), 200)
    scorer = build_scorer("tfidf").fit(texts, labels)
    params, arrays = scorer.state()
    with pytest.raises(InputError, match="retrain it"):
        build_scorer("tfidf_length").from_state(dict(params, length_slopes=True), arrays)
