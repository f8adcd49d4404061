"""Router metrics against hand-computed cases and brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kdroute.route import metrics as M


def test_perfect_router_reaches_the_oracle_curve_brute_force():
    rng = np.random.default_rng(1)
    qs = np.array([0, 1, 0, 1, 0, 0, 1.0])
    qt = np.array([1, 0, 1, 1, 1, 0, 1.0])  # better than the student on average
    curve = M.routing_curve(M.oracle_scores(qs, qt), qs, qt)
    gain = qt - qs
    best = [max(sum(gain[list(c)]) for c in itertools.combinations(range(7), k))
            for k in range(8)]
    assert curve.quality == pytest.approx((qs.sum() + np.array(best)) / 7)
    other = M.routing_curve(rng.random(7), qs, qt)
    assert M.apgr(curve) >= M.apgr(other)


def test_constant_score_is_random_in_expectation():
    rng = np.random.default_rng(2)
    qs = np.array([1, 0, 0, 1, 0, 1.0])
    qt = np.array([1, 1, 0, 1, 1, 0.0])
    perms = list(itertools.permutations(range(6)))
    mean_pgr = np.mean([M.routing_curve(-np.argsort(p), qs, qt).pgr for p in perms], axis=0)
    const = M.routing_curve(np.full(6, 0.3), qs, qt)
    assert const.pgr == pytest.approx(mean_pgr)
    assert M.apgr(const) == pytest.approx(0.5)
    assert M.apgr_10pt(const) == pytest.approx(0.5)
    assert M.cpt(const, 0.8) == pytest.approx(0.8)
    noisy = [M.apgr(M.routing_curve(rng.random(6), qs, qt)) for _ in range(3000)]
    assert np.mean(noisy) == pytest.approx(0.5, abs=0.02)


def test_cpt_takes_the_first_crossing_of_a_non_monotone_curve():
    # Sorted by score: gains +1, -1, +1, +1, 0 -> PGR at k = 0..5: 0, .5, 0, .5, 1, 1
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    qs = [0, 1, 0, 0, 1]
    qt = [1, 0, 1, 1, 1]
    curve = M.routing_curve(scores, qs, qt)
    assert curve.pgr == pytest.approx([0, 0.5, 0, 0.5, 1, 1])
    assert M.cpt(curve, 0.5) == pytest.approx(0.2)  # not 0.6, the last crossing
    assert M.cpt(curve, 0.25) == pytest.approx(0.1)
    assert M.cpt(curve, 0.75) == pytest.approx(0.7)
    assert M.cpt(curve, 0.0) == 0.0
    assert np.isnan(M.cpt(curve, 1.5))
    assert M.apgr(curve) == pytest.approx(0.5)  # 0.2 * (0 + .5 + 0 + .5 + 1 + 1/2)
    assert M.summary(curve)["cpt50"] == pytest.approx(0.2)


def test_ties_share_their_gain():
    curve = M.routing_curve([1, 1, 0], [0, 1, 0], [1, 0, 1])
    # the two tied items average gain 0; the last one gains 1
    assert curve.quality == pytest.approx([1 / 3, 1 / 3, 1 / 3, 2 / 3])


def test_cost_axis_hand_computed():
    curve = M.routing_curve([0.9, 0.1], q_student=[0, 1], q_teacher=[1, 1],
                            cost_student=[1, 0], cost_teacher=[3, 1])
    assert curve.cost == pytest.approx([0, 2 / 3, 1])
    assert curve.cost_vs_teacher == pytest.approx([1 / 4, 3 / 4, 1])
    assert M.apgr(curve) == pytest.approx(0.75)
    assert M.apgr(curve, "cost") == pytest.approx(2 / 3)
    assert M.cpt(curve, 0.5, "cost") == pytest.approx(1 / 3)
    same = M.routing_curve([0.9, 0.1], [0, 1], [1, 1], cost_student=0.2, cost_teacher=1.0)
    assert same.cost == pytest.approx(same.calls)  # equal per-query costs: the same axis


def test_auc_matches_pairwise_count_with_ties():
    rng = np.random.default_rng(3)
    s = rng.integers(0, 4, 40).astype(float)
    y = rng.integers(0, 2, 40)
    pos, neg = s[y == 1], s[y == 0]
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert M.auc(s, y) == pytest.approx(brute)
    assert np.isnan(M.auc(s, np.zeros(40)))


def test_undefined_cases_raise():
    with pytest.raises(ValueError, match="same mean quality"):
        M.routing_curve([0.1, 0.2], [1, 0], [0, 1])
    with pytest.raises(ValueError):
        M.routing_curve([], [], [])


def test_evaluate_bootstrap_interval_brackets_the_estimate():
    rng = np.random.default_rng(4)
    qs = (rng.random(300) < 0.6).astype(float)
    qt = np.maximum(qs, rng.random(300) < 0.7)
    scores = (qt - qs) + rng.normal(0, 0.8, 300)
    out = M.evaluate(scores, qs, qt, rounds=200, cost_student=0.1, cost_teacher=1.0)
    assert out["apgr_lo"] <= out["apgr"] <= out["apgr_hi"]
    assert out["cpt50_lo"] <= out["cpt50"] <= out["cpt50_hi"]
    assert out["apgr"] > 0.6 and out["auc"] > 0.6
    assert out["apgr_cost"] == pytest.approx(out["apgr"])  # equal per-query costs
