"""The monitor's statistics, tested by their properties and against brute force."""

import math
import random

import pytest

from kdroute.monitor.stats import psi, weighted_rate, wilson_interval


def test_wilson_matches_the_textbook_value():
    # 8 of 10 at 95 %: Wilson interval (0.4902, 0.9433) (e.g. Agresti & Coull, 1998)
    lower, upper = wilson_interval(0.8, 10, 0.95)
    assert lower == pytest.approx(0.4902, abs=1e-4)
    assert upper == pytest.approx(0.9433, abs=1e-4)


def test_wilson_stays_inside_0_1_and_narrows_with_n():
    for p in (0.0, 0.3, 1.0):
        widths = []
        for n in (10, 100, 1000):
            lower, upper = wilson_interval(p, n)
            assert 0.0 <= lower <= p <= upper <= 1.0
            widths.append(upper - lower)
        assert widths[0] > widths[1] > widths[2]
    assert wilson_interval(0.5, 0) == (0.0, 1.0)


def test_wilson_covers_the_true_rate_about_as_often_as_promised():
    rng = random.Random(0)
    covered = 0
    for _ in range(2000):
        k = sum(rng.random() < 0.85 for _ in range(200))
        lower, upper = wilson_interval(k / 200, 200, 0.95)
        covered += lower <= 0.85 <= upper
    assert 0.93 <= covered / 2000 <= 0.97


def test_equal_weights_give_the_plain_rate_and_n():
    rate = weighted_rate([1, 0, 1, 1], [0.2, 0.2, 0.2, 0.2])
    assert rate.value == pytest.approx(0.75)
    assert rate.n_eff == pytest.approx(4)
    assert (rate.lower, rate.upper) == pytest.approx(wilson_interval(0.75, 4))


def test_inverse_probability_weights_undo_oversampling():
    # Stratum A (agreement 0.5) is sampled at 100 %, stratum B (agreement 1.0) at 10 %: the
    # unweighted rate over-represents A; the weighted one recovers the population's 0.95.
    rng = random.Random(1)
    verdicts, probs = [], []
    for _ in range(1000):
        if rng.random() < 0.1:  # 10 % of traffic is in A
            verdicts.append(float(rng.random() < 0.5))
            probs.append(1.0)
        elif rng.random() < 0.1:
            verdicts.append(1.0)
            probs.append(0.1)
    plain = sum(verdicts) / len(verdicts)
    weighted = weighted_rate(verdicts, probs)
    assert abs(weighted.value - 0.95) < abs(plain - 0.95)
    assert abs(weighted.value - 0.95) < 0.03
    assert weighted.n_eff < weighted.n


def test_weighted_rate_rejects_bad_probabilities():
    with pytest.raises(ValueError):
        weighted_rate([1, 0], [0.5, 0.0])
    with pytest.raises(ValueError):
        weighted_rate([1, 0], [0.5])
    assert math.isnan(weighted_rate([]).value)


def test_psi_is_zero_for_equal_distributions_and_grows_with_shift():
    base = [10, 20, 30, 40]
    assert psi(base, [1, 2, 3, 4]) == pytest.approx(0.0)
    small, large = psi(base, [12, 20, 30, 38]), psi(base, [40, 30, 20, 10])
    assert 0 < small < large
    # brute force: the definition on shares
    e = [b / 100 for b in base]
    a = [0.4, 0.3, 0.2, 0.1]
    assert large == pytest.approx(sum((ai - ei) * math.log(ai / ei) for ai, ei in zip(a, e, strict=True)))
    assert math.isfinite(psi([1, 0], [0, 1]))
