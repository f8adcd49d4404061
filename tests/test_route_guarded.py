"""Scorers for traffic unlike the training data (issue 15): `embedding_within` learns only
within-group differences, and `guarded` trusts its topic scorer only near the training prompts."""

from __future__ import annotations

import numpy as np
import pytest

from kdroute.route.artifact import Artifact, load_artifact, save_artifact
from kdroute.route.ensemble import QUANTILES
from kdroute.route.registry import build_scorer
from tests.test_route_train import synthetic_pairs

HARD = "Think it through step by step, checking every intermediate result twice before answering."


def grouped_prompts(base: dict[str, float], lift: float = 0.3):
    """Per topic, plain prompts at the topic's base rate and the same prompts asking for careful
    multi-step work `lift` above it: the within-topic signal is the same in every topic."""
    topics = {"chemistry": "How many moles of gas are in flask {i} at room temperature?",
              "history": "In which year did treaty number {i} come into force?",
              "cooking": "How long should loaf number {i} bake at 200 degrees?"}
    texts, labels, groups = [], [], []
    for topic, rate in base.items():
        for i in range(12):
            for hard in (False, True):
                texts.append(topics[topic].format(i=i) + (" " + HARD if hard else ""))
                labels.append(rate + (lift if hard else 0.0))
                groups.append(topic)
    return texts, np.array(labels), groups


def test_embedding_within_ignores_each_groups_label_rate():
    texts, y, groups = grouped_prompts({"chemistry": 0.6, "history": 0.1})
    _, y_swapped, _ = grouped_prompts({"chemistry": 0.1, "history": 0.6})
    a = build_scorer("embedding_within").fit(texts, y, groups)
    b = build_scorer("embedding_within").fit(texts, y_swapped, groups)
    assert a.w == pytest.approx(b.w, abs=1e-9)  # the rates differ, the fit does not
    raw = build_scorer("embedding").fit(texts, y, groups)  # the raw head learns the rate
    chem, hist = texts[0], texts[24]
    assert raw.score_texts([chem])[0] > raw.score_texts([hist])[0]
    # a topic it never saw: the careful multi-step variant ranks above the plain one
    new, _, _ = grouped_prompts({"cooking": 0.5})
    scores = a.score_texts(new)
    assert np.mean(scores[1::2] > scores[0::2]) >= 0.9


def test_embedding_within_learns_nothing_from_one_group_and_round_trips(tmp_path):
    texts, y, groups = grouped_prompts({"chemistry": 0.3, "history": 0.3})
    for one_group in (None, ["all"] * len(texts)):  # difficulty cannot be told from topic
        flat = build_scorer("embedding_within").fit(texts, y, one_group)
        assert np.all(flat.score_texts(texts) == 0.5)
    two = build_scorer("embedding_within").fit(texts, y, groups)
    assert np.ptp(two.score_texts(texts)) > 0
    path = save_artifact(Artifact(two, 0.5, teacher="T", student="S"), tmp_path / "w.json")
    loaded = load_artifact(path).scorer
    assert loaded.score_texts(texts[:4]) == pytest.approx(two.score_texts(texts[:4]), abs=1e-6)


@pytest.fixture(scope="module")
def guarded():
    rows = synthetic_pairs(n=80, seed=5)
    texts = [r[0] for r in rows]
    labels = np.array([(r[2] - r[1] + 1) / 2 for r in rows])
    return texts, build_scorer("guarded").fit(texts, labels, None)


def test_guarded_mixes_by_the_gate_and_trusts_the_topic_scorer_near_the_training_prompts(
        guarded):
    texts, scorer = guarded
    near = texts[:20]
    a = scorer.gate(near)
    assert a.mean() >= 0.9 and a.min() >= 0.0 and a.max() <= 1.0
    grid = np.linspace(0.0, 1.0, QUANTILES)
    topic = np.interp(scorer.topic.score_texts(near), scorer.quantiles[0], grid)
    general = np.interp(scorer.general.score_texts(near), scorer.quantiles[1], grid)
    assert scorer.score_texts(near) == pytest.approx(a * topic + (1 - a) * general)
    assert scorer.score_texts(near)[a == 1] == pytest.approx(topic[a == 1])


def test_guarded_falls_back_to_the_general_scorer_far_from_them(guarded):
    _, scorer = guarded
    far = ["Write a sonnet about autumn leaves in the style of Petrarch.",
           "Which enzyme unwinds the DNA double helix during replication?"]
    assert scorer.gate(far) == pytest.approx(0.0)
    grid = np.linspace(0.0, 1.0, QUANTILES)
    general = np.interp(scorer.general.score_texts(far), scorer.quantiles[1], grid)
    assert scorer.score_texts(far) == pytest.approx(general)
