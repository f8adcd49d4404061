"""Drift detectors over the stream of scored shadow pairs. Pure: no I/O, no clock.

- **Quality** (per slice; these alerts drive the breaker): the weighted agreement of the last
  `window` evaluations with its Wilson interval. The alert opens when the upper bound is below the
  floor with at least `min_samples` evaluations, and resolves only when the lower bound is back
  above it: the gap between the two bounds is the hysteresis, so a rate hovering at the floor does
  not flap. A slice may have a floor of its own (`slice_floors`): a family where even a healthy
  pair agrees rarely (both models wrong, differently) needs a lower one than the stream.
- **Decay** (the whole stream): a Bernoulli CUSUM (Reynolds & Stoumbos) of "acceptable" rate
  p0 = floor + decay_margin against "at the floor" p1 = floor. It accumulates evidence of a slow
  slide that a window of 200 only confirms late. The threshold h is set from the in-control
  average run length (`decay_arl`) by the Brook–Evans Markov chain, so the false-alarm rate is a
  number the user chose. (river's Page–Hinkley/ADWIN test a running mean with tuning constants
  that have no such reading; the recursion itself is three lines.) It resolves like a quality
  alert: when the window's lower bound is above the floor.

`Detector.evaluate(open_alerts)` compares the state with the alerts the ledger holds open and says
what to open or resolve. It keeps no memory of alerts itself, so several gateway workers reading
the same ledger rows reach the same decisions, and whichever writes first wins (the ledger allows
one open alert per kind and slice).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from kdroute.monitor.stats import Rate, psi, wilson_interval

ALL = "all"


@dataclass(frozen=True)
class DetectorSettings:
    floor: float = 0.8
    window: int = 200
    min_samples: int = 50
    confidence: float = 0.95
    decay_margin: float = 0.05
    decay_arl: float = 50_000.0
    slice_floors: tuple[tuple[str, float], ...] = ()  # (slice, floor) pairs; others use `floor`

    def floor_of(self, slice_: str) -> float:
        """The floor a slice's quality alert is judged against."""
        return dict(self.slice_floors).get(slice_, self.floor)

    @classmethod
    def from_config(cls, cfg, **overrides) -> DetectorSettings:
        values = {name: getattr(cfg, key) for name, key in (
            ("floor", "agreement_floor"), ("window", "window"), ("min_samples", "min_samples"),
            ("confidence", "confidence"), ("decay_margin", "decay_margin"),
            ("decay_arl", "decay_arl"))}
        values["slice_floors"] = tuple(sorted(getattr(cfg, "slice_floors", {}).items()))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass(frozen=True)
class Observation:
    """One scored pair: the verdict (1 agree, 0 disagree), the probability its request was
    sampled, and the slices it belongs to (always including "all")."""

    verdict: float
    inclusion_prob: float = 1.0
    slices: tuple[str, ...] = (ALL,)


@dataclass(frozen=True)
class AlertAction:
    """An alert to open or resolve. `bound` is what is compared with `threshold`: the Wilson
    bound against the floor (quality), the CUSUM statistic against h (decay), the PSI or the
    teacher-share gap against its limit (input_drift); `value` is the statistic itself."""

    action: str  # open | resolve
    kind: str  # quality | decay | input_drift
    slice: str
    statistic: str
    value: float
    bound: float
    n: int
    window: int
    threshold: float
    message: str

    def row(self) -> dict:
        """The ledger's alerts row for an opening."""
        return {"kind": self.kind, "slice": self.slice, "statistic": self.statistic,
                "value": self.value, "bound": self.bound, "n": self.n, "window": self.window,
                "threshold": self.threshold, "message": self.message}


class SliceWindow:
    """The last `size` (verdict, 1/π) pairs with running sums, so a rate is O(1)."""

    def __init__(self, size: int):
        self.items: deque[tuple[float, float]] = deque()
        self.size = size
        self.sw = self.swy = self.sww = 0.0

    def add(self, verdict: float, inclusion_prob: float) -> None:
        w = 1.0 / inclusion_prob
        self.items.append((verdict, w))
        self.sw, self.swy, self.sww = self.sw + w, self.swy + w * verdict, self.sww + w * w
        if len(self.items) > self.size:
            y, w = self.items.popleft()
            self.sw, self.swy, self.sww = self.sw - w, self.swy - w * y, self.sww - w * w

    def rate(self, confidence: float) -> Rate:
        n = len(self.items)
        if n == 0 or self.sw <= 0:
            return Rate(float("nan"), 0.0, 1.0, 0, 0.0, confidence)
        value = min(1.0, max(0.0, self.swy / self.sw))
        n_eff = self.sw * self.sw / self.sww
        lower, upper = wilson_interval(value, n_eff, confidence)
        return Rate(value, lower, upper, n, n_eff, confidence)


# --- the Bernoulli CUSUM ------------------------------------------------------------------------

def cusum_steps(p0: float, p1: float) -> tuple[float, float]:
    """Log-likelihood-ratio increments of (agree, disagree) for H1: p1 against H0: p0 (p1 < p0)."""
    return math.log(p1 / p0), math.log((1 - p1) / (1 - p0))


# The statistic on a lattice of width up / _STEPS_PER_JUMP: a disagreement is exactly that many
# states up, an agreement the nearest whole number of states down (1 % off at the defaults).
_STEPS_PER_JUMP = 50


def cusum_arl(p: float, p0: float, p1: float, h: float) -> float:
    """Average run length (evaluations until an alarm) of the CUSUM with threshold h when the
    true agreement rate is p: Brook & Evans' (1972) Markov chain of the statistic on a lattice,
    absorbed at h."""
    down, up = cusum_steps(p0, p1)
    width = up / _STEPS_PER_JUMP
    d = min(-1, int(round(down / width)))
    grid = max(1, math.ceil(h / width))
    return _lattice_arl(p, d, _STEPS_PER_JUMP, grid)


@lru_cache(maxsize=64)
def _lattice_arl(p: float, d: int, u: int, grid: int) -> float:
    from scipy.sparse import csc_matrix, identity
    from scipy.sparse.linalg import spsolve

    states = np.arange(grid)
    rows, cols, vals = [states], [np.maximum(states + d, 0)], [np.full(grid, p)]
    stay = states + u < grid  # a disagreement past h is absorbed: an alarm
    rows.append(states[stay])
    cols.append(states[stay] + u)
    vals.append(np.full(int(stay.sum()), 1 - p))
    P = csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                   shape=(grid, grid))
    run = spsolve((identity(grid, format="csc") - P).tocsc(), np.ones(grid))
    return float(run[0])


@lru_cache(maxsize=64)
def cusum_threshold(p0: float, p1: float, arl0: float) -> float:
    """The smallest threshold h on the lattice whose in-control (p = p0) average run length is
    at least `arl0` (bisection over lattice sizes: the run length grows with h)."""
    down, up = cusum_steps(p0, p1)
    width = up / _STEPS_PER_JUMP
    d = min(-1, int(round(down / width)))
    lo, hi = 1, _STEPS_PER_JUMP
    while _lattice_arl(p0, d, _STEPS_PER_JUMP, hi) < arl0:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _lattice_arl(p0, d, _STEPS_PER_JUMP, mid) < arl0:
            lo = mid
        else:
            hi = mid
    return hi * width


@dataclass
class BernoulliCusum:
    p0: float
    p1: float
    h: float
    statistic: float = 0.0
    _steps: tuple[float, float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._steps = cusum_steps(self.p0, self.p1)

    def update(self, verdict: float) -> float | None:
        """Add one 0/1 verdict; the statistic's value when it crosses h (then it restarts),
        else None."""
        down, up = self._steps
        self.statistic = max(0.0, self.statistic + verdict * down + (1 - verdict) * up)
        if self.statistic >= self.h:
            peak, self.statistic = self.statistic, 0.0
            return peak
        return None


# --- the detector -------------------------------------------------------------------------------

class Detector:
    def __init__(self, settings: DetectorSettings):
        self.settings = settings
        self.windows: dict[str, SliceWindow] = {}
        p0 = min(settings.floor + settings.decay_margin, 0.999)
        self.cusum = (BernoulliCusum(p0, settings.floor,
                                     cusum_threshold(p0, settings.floor, settings.decay_arl))
                      if 0 < settings.floor < p0 else None)
        self._decay_alarm: float | None = None  # the statistic's peak when it crossed h
        self.seen = 0

    def add(self, obs: Observation) -> None:
        self.seen += 1
        for name in obs.slices:
            window = self.windows.get(name)
            if window is None:
                window = self.windows[name] = SliceWindow(self.settings.window)
            window.add(obs.verdict, obs.inclusion_prob)
        if self.cusum is not None:
            peak = self.cusum.update(obs.verdict)
            if peak is not None:
                self._decay_alarm = peak

    def rates(self) -> dict[str, Rate]:
        return {name: w.rate(self.settings.confidence) for name, w in self.windows.items()}

    def evaluate(self, open_alerts: set[tuple[str, str]]) -> list[AlertAction]:
        """What to open or resolve, given the (kind, slice) alerts open in the ledger now."""
        s = self.settings
        actions = []
        rates = self.rates()
        for name, rate in sorted(rates.items()):
            is_open = ("quality", name) in open_alerts
            if rate.n < s.min_samples:
                continue
            floor = s.floor_of(name)
            if not is_open and rate.upper < floor:
                actions.append(self._action("open", "quality", name, rate, rate.upper,
                                            f"agreement {rate.value:.3f} (upper bound "
                                            f"{rate.upper:.3f}) below the floor {floor:g}", floor))
            elif is_open and rate.lower > floor:
                actions.append(self._action("resolve", "quality", name, rate, rate.lower,
                                            f"agreement {rate.value:.3f} (lower bound "
                                            f"{rate.lower:.3f}) back above {floor:g}", floor))
        overall = rates.get(ALL)
        decay_open = ("decay", ALL) in open_alerts
        if self._decay_alarm is not None and not decay_open and self.cusum is not None:
            rate = overall or Rate(float("nan"), 0.0, 1.0, 0, 0.0, s.confidence)
            actions.append(AlertAction(
                "open", "decay", ALL, "bernoulli_cusum", self._decay_alarm, self._decay_alarm,
                rate.n, s.window, self.cusum.h,
                f"CUSUM of agreement {self.cusum.p0:.3f} -> {self.cusum.p1:.3f} crossed "
                f"h = {self.cusum.h:.2f} (recent agreement {rate.value:.3f})"))
        elif decay_open and overall is not None and overall.n >= s.min_samples \
                and overall.lower > s.floor:
            actions.append(self._action("resolve", "decay", ALL, overall, overall.lower,
                                        f"agreement {overall.value:.3f} (lower bound "
                                        f"{overall.lower:.3f}) back above {s.floor:g}"))
        self._decay_alarm = None
        return actions

    def _action(self, action: str, kind: str, name: str, rate: Rate, bound: float,
                message: str, floor: float | None = None) -> AlertAction:
        return AlertAction(action, kind, name, "wilson_agreement", rate.value, bound, rate.n,
                           self.settings.window,
                           self.settings.floor if floor is None else floor, message)


def run_stream(detector: Detector, observations) -> list[tuple[int, AlertAction]]:
    """Feed observations one at a time, evaluating after each, as if every evaluation were
    applied to a ledger at once: (index, action) for each alert opened or resolved. What
    `kdroute monitor replay` and the drift benchmark run."""
    open_alerts: set[tuple[str, str]] = set()
    events = []
    for i, obs in enumerate(observations):
        detector.add(obs)
        for act in detector.evaluate(open_alerts):
            key = (act.kind, act.slice)
            if act.action == "open":
                open_alerts.add(key)
            else:
                open_alerts.discard(key)
            events.append((i, act))
    return events


# --- the input side -----------------------------------------------------------------------------

PSI_BINS = 10


def _histogram(scores) -> list[int]:
    counts = [0] * PSI_BINS
    for s in scores:
        counts[min(int(max(s, 0.0) * PSI_BINS), PSI_BINS - 1)] += 1
    return counts


def input_drift(reference, recent, reference_share: float | None, cfg,
                is_open: bool) -> list[AlertAction]:
    """Router-score PSI and teacher-call share of the recent routed requests against the
    reference (the router's calibration share when known, else the reference window's). Both
    move before quality does: new kinds of prompts arrive before the student fails on them.
    `reference`/`recent` are (ts, score, threshold) rows. Opens past `psi_alert` or
    `teacher_share_tolerance`; resolves below half of both (hysteresis)."""
    if not reference or not recent:
        return []
    value = psi(_histogram(s for _, s, _ in reference), _histogram(s for _, s, _ in recent))
    share = sum(s >= t for _, s, t in recent) / len(recent)
    if reference_share is None:
        reference_share = sum(s >= t for _, s, t in reference) / len(reference)
    gap = abs(share - reference_share)
    drifted = value > cfg.psi_alert or gap > cfg.teacher_share_tolerance
    calm = value < cfg.psi_alert / 2 and gap < cfg.teacher_share_tolerance / 2
    detail = (f"router-score PSI {value:.3f} (alert at {cfg.psi_alert:g}), teacher share "
              f"{share:.3f} vs {reference_share:.3f} (tolerance {cfg.teacher_share_tolerance:g})")
    by_share = value <= cfg.psi_alert
    statistic, threshold = (("teacher_share_gap", cfg.teacher_share_tolerance) if by_share
                            else ("router_score_psi", cfg.psi_alert))
    stat_value = gap if by_share else value
    if drifted and not is_open:
        action = "open"
    elif calm and is_open:
        action = "resolve"
    else:
        return []
    return [AlertAction(action, "input_drift", ALL, statistic, stat_value, stat_value,
                        len(recent), len(recent), threshold, detail)]
