"""The detectors (pure): window alerts with min_samples and hysteresis, per slice; the CUSUM's
run length against its Markov chain; input drift; the stratified sampler's inclusion
probabilities; the breaker's snapshot and guard."""

import asyncio
import random
from types import SimpleNamespace

import pytest

from kdroute.gateway.routing import Decision
from kdroute.monitor.breaker import Breaker
from kdroute.monitor.detect import (
    BernoulliCusum,
    Detector,
    DetectorSettings,
    Observation,
    SliceWindow,
    cusum_arl,
    cusum_threshold,
    input_drift,
    run_stream,
)
from kdroute.monitor.metrics import MonitorMetrics
from kdroute.monitor.sampling import StratifiedSampler
from kdroute.monitor.slices import score_bucket, slices_of, train_family_classifier
from kdroute.monitor.stats import weighted_rate

S = DetectorSettings(floor=0.8, window=40, min_samples=20, decay_arl=1e9)  # decay out of the way


def obs(verdicts, slices=("all",)):
    return [Observation(float(v), 1.0, slices) for v in verdicts]


def quality(events):
    return [(i, a.action, a.slice) for i, a in events if a.kind == "quality"]


def test_no_alert_before_min_samples_then_one_alert_then_hysteresis():
    events = run_stream(Detector(S), obs([0] * 19))
    assert quality(events) == []  # all wrong, but fewer than min_samples
    events = run_stream(Detector(S), obs([0] * 20 + [1] * 200))
    qs = quality(events)
    assert qs[0] == (19, "open", "all")
    resolve = qs[1]
    assert resolve[1] == "resolve" and len(qs) == 2
    # resolution waits for the lower bound: the whole window of 40 agreeing is not needed, but
    # the rate must be clearly above the floor, not merely at it
    window = SliceWindow(40)
    for v in [0] * 20 + [1] * (resolve[0] - 19):
        window.add(v, 1.0)
    assert window.rate(0.95).lower > 0.8 and window.rate(0.95).value > 0.9


def test_a_rate_hovering_at_the_floor_flaps_far_less_than_a_point_estimate():
    rng = random.Random(0)
    stream = obs([rng.random() < 0.8 for _ in range(5000)])
    switches = len(quality(run_stream(Detector(S), stream)))
    window, below, naive = SliceWindow(S.window), False, 0  # the window's rate against the floor
    for o in stream:
        window.add(o.verdict, 1.0)
        now_below = len(window.items) >= S.min_samples and window.swy / window.sw < S.floor
        naive += now_below != below
        below = now_below
    assert 0 < switches < naive / 5


def test_slices_alert_on_their_own():
    rng = random.Random(1)
    stream = []
    for _ in range(400):
        if rng.random() < 0.5:
            stream.append(Observation(0.0, 1.0, ("all", "family:code")))
        else:
            stream.append(Observation(1.0, 1.0, ("all", "family:chat")))
    events = run_stream(Detector(S), stream)
    opened = {a.slice for _, a in events if a.action == "open" and a.kind == "quality"}
    assert "family:code" in opened and "family:chat" not in opened


def test_a_slice_floor_judges_that_slice_only():
    # a family where even a healthy pair agrees 30 % of the time: the stream's floor of 0.8 would
    # keep it alerted for ever; its own floor of 0.2 does not, and the other slices keep 0.8
    rng = random.Random(3)
    stream = [Observation(float(rng.random() < 0.3), 1.0, ("family:arith",)) for _ in range(300)]
    stream += [Observation(float(rng.random() < 0.5), 1.0, ("family:sort",)) for _ in range(300)]
    plain = {a.slice for _, a in run_stream(Detector(S), stream)
             if a.action == "open" and a.kind == "quality"}
    own = DetectorSettings(floor=0.8, window=40, min_samples=20, decay_arl=1e9,
                           slice_floors=(("family:arith", 0.2),))
    events = [a for _, a in run_stream(Detector(own), stream) if a.kind == "quality"]
    assert plain == {"family:arith", "family:sort"}
    assert {a.slice for a in events if a.action == "open"} == {"family:sort"}
    assert all(a.threshold == 0.8 for a in events)
    assert own.floor_of("family:arith") == 0.2 and own.floor_of("all") == 0.8
    # and it is judged against its own floor when it does fall below it
    worse = [Observation(0.0, 1.0, ("family:arith",)) for _ in range(40)]
    opened = [a for _, a in run_stream(Detector(own), worse)
              if a.action == "open" and a.kind == "quality"]
    assert [(a.slice, a.threshold) for a in opened] == [("family:arith", 0.2)]


def test_slice_floors_come_from_the_config_and_are_checked():
    from kdroute.config import Settings

    cfg = Settings.model_validate({"monitor": {"slice_floors": {"family:arith": 0.3}}}).monitor
    assert DetectorSettings.from_config(cfg).floor_of("family:arith") == 0.3
    with pytest.raises(ValueError, match="family:arith"):
        Settings.model_validate({"monitor": {"slice_floors": {"family:arith": 1.5}}})


def test_window_rate_equals_weighted_rate_of_its_last_items():
    rng = random.Random(2)
    window, items = SliceWindow(25), []
    for _ in range(100):
        v, p = float(rng.random() < 0.7), rng.choice([0.05, 0.2, 1.0])
        window.add(v, p)
        items = (items + [(v, p)])[-25:]
        expected = weighted_rate([v for v, _ in items], [p for _, p in items])
        got = window.rate(0.95)
        assert got.value == pytest.approx(expected.value)
        assert got.lower == pytest.approx(expected.lower)
        assert got.n_eff == pytest.approx(expected.n_eff)


def test_cusum_threshold_gives_the_asked_run_length():
    h = cusum_threshold(0.9, 0.85, 2000)
    assert cusum_arl(0.9, 0.9, 0.85, h) >= 2000
    assert cusum_arl(0.9, 0.9, 0.85, h - 0.02) < 2000 * 1.05
    assert cusum_arl(0.75, 0.9, 0.85, h) < cusum_arl(0.85, 0.9, 0.85, h) < 2000


def test_cusum_run_length_matches_simulation():
    h = cusum_threshold(0.9, 0.8, 300)
    rng = random.Random(4)
    runs = []
    for _ in range(400):
        cusum, n = BernoulliCusum(0.9, 0.8, h), 0
        while True:
            n += 1
            if cusum.update(float(rng.random() < 0.9)) is not None:
                break
        runs.append(n)
    mean = sum(runs) / len(runs)
    predicted = cusum_arl(0.9, 0.9, 0.8, h)
    # run lengths are roughly geometric: sd ~ mean, so 400 runs give the mean within ~15 %
    assert abs(mean - predicted) / predicted < 0.2


def test_decay_alert_opens_on_a_slide_and_resolves_on_recovery():
    s = DetectorSettings(floor=0.8, window=100, min_samples=20, decay_margin=0.1, decay_arl=5000)
    rng = random.Random(5)
    stream = obs([rng.random() < p for p in [0.9] * 300 + [0.8] * 600 + [0.95] * 600])
    events = [(i, a) for i, a in run_stream(Detector(s), stream) if a.kind == "decay"]
    assert events[0][1].action == "open" and 300 <= events[0][0] < 900
    opened = events[0][1]
    assert opened.statistic == "bernoulli_cusum" and opened.bound >= opened.threshold > 0
    assert any(a.action == "resolve" for i, a in events if i >= 900)


def cfg(**kw):
    return SimpleNamespace(**{"psi_alert": 0.25, "teacher_share_tolerance": 0.15, **kw})


def test_input_drift_on_router_scores_and_teacher_share():
    rng = random.Random(6)
    reference = [("t", rng.random() * 0.6, 0.5) for _ in range(500)]
    same = [("t", rng.random() * 0.6, 0.5) for _ in range(500)]
    shifted = [("t", 0.4 + rng.random() * 0.6, 0.5) for _ in range(500)]
    assert input_drift(reference, same, None, cfg(), is_open=False) == []
    (act,) = input_drift(reference, shifted, None, cfg(), is_open=False)
    assert (act.action, act.kind, act.slice, act.statistic) == \
        ("open", "input_drift", "all", "router_score_psi")
    assert act.value > 0.25
    (res,) = input_drift(reference, same, None, cfg(), is_open=True)
    assert res.action == "resolve"
    # the calibration said 60 % go to the teacher; 17 % do now
    (share,) = input_drift(reference, same, 0.6, cfg(psi_alert=100.0), is_open=False)
    assert share.statistic == "teacher_share_gap" and share.value > 0.15 == share.threshold


def test_sampler_keeps_the_mean_rate_and_weights_make_rates_unbiased():
    sampler = StratifiedSampler(0.1, near_band=0.1, near_boost=4.0, seed=7)
    rng = random.Random(8)
    sampled = weights = 0
    verdicts, probs = [], []
    n = 60_000
    for _ in range(n):
        score = rng.random() * 0.5  # student-served: below the threshold 0.5
        near = score >= 0.4
        truth = rng.random() < (0.6 if near else 0.95)  # near the threshold the student errs
        prob = sampler.sample(score, 0.5)
        if prob is not None:
            sampled += 1
            weights += 1 / prob
            verdicts.append(float(truth))
            probs.append(prob)
    assert sampled / n == pytest.approx(0.1, rel=0.05)
    near_prob = sampler.inclusion_prob(True)
    assert near_prob == pytest.approx(4 * sampler.inclusion_prob(False))
    true_rate = 0.2 * 0.6 + 0.8 * 0.95
    weighted = weighted_rate(verdicts, probs).value
    plain = sum(verdicts) / len(verdicts)
    assert abs(weighted - true_rate) < 0.01 < abs(plain - true_rate)
    assert StratifiedSampler(1.0, near_boost=3.0).inclusion_prob(False) == 1.0
    assert StratifiedSampler(0.0).sample(0.45, 0.5) is None


def test_slices_and_family_classifier():
    assert score_bucket(0.1, 4) == "score:0.00-0.25" and score_bucket(1.0, 4) == "score:0.75-1.00"
    assert slices_of("family:math", 0.3, 4) == ("all", "family:math", "score:0.25-0.50")
    assert slices_of("all", None, 4) == ("all",)
    examples = [(f"What is {a} plus {b}?", "arith") for a in range(20) for b in range(3)] + \
        [(f"Translate 'word{i}' into French, please.", "translate") for i in range(60)]
    classifier = train_family_classifier(examples)
    assert classifier.predict("What is 123 plus 9?") == "family:arith"
    assert classifier.predict("Translate 'house' into French, please.") == "family:translate"
    assert train_family_classifier([("a", "only"), ("b", "only")] * 10) is None


def test_breaker_guard_overrides_only_router_decisions_of_open_slices():
    breaker = Breaker(True, 4, MonitorMetrics())
    record = SimpleNamespace(slice=None)
    student = Decision("student", "router", 0.1, 0.5)
    assert asyncio.run(breaker.guard(student, [], record)) is student and record.slice == "all"
    breaker.update({"score:0.25-0.50"})
    assert asyncio.run(breaker.guard(student, [], record)) is student  # another bucket
    breaker.update({"score:0.00-0.25"})
    broken = asyncio.run(breaker.guard(student, [], record))
    assert (broken.role, broken.reason, broken.score) == ("teacher", "breaker", 0.1)
    forced = Decision("student", "override", None, None)
    assert asyncio.run(breaker.guard(forced, [], record)) is forced
    breaker.update(set())
    assert asyncio.run(breaker.guard(student, [], record)) is student
    off = Breaker(False, 4, MonitorMetrics())
    off.update({"all"})
    assert asyncio.run(off.guard(student, [], record)) is student
