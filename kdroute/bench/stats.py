"""Pure functions that turn two models' scores into a verdict: retention, chance-corrected
retention, the paired difference with its standard error and z-test p-value, and the gate."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def retention(student: float, teacher: float) -> float | None:
    """student / teacher; None when the teacher scores 0 (retention is undefined)."""
    return student / teacher if teacher > 0 else None


def chance_corrected_retention(student: float, teacher: float, chance: float) -> float | None:
    """(s - chance) / (t - chance): the share of the teacher's above-chance skill the student
    keeps; None when the teacher is at or below chance."""
    return (student - chance) / (teacher - chance) if teacher > chance else None


def paired_difference(student: Sequence[float], teacher: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of s_i - t_i over the same items (shapes (N,), (N,)).

    Pairing removes the between-item variance both models share, so it is tighter than the
    difference of two independent means."""
    if len(student) != len(teacher) or not student:
        raise ValueError("paired scores need two equally long, non-empty sequences")
    diffs = [s - t for s, t in zip(student, teacher, strict=True)]
    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        return mean, 0.0
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1)
    return mean, math.sqrt(var / n)


def unpaired_difference(student: float, student_se: float, teacher: float,
                        teacher_se: float) -> tuple[float, float]:
    """s - t and its standard error when the items cannot be paired."""
    return student - teacher, math.hypot(student_se, teacher_se)


def z_test_p(diff: float, stderr: float) -> float:
    """Two-sided p-value of H0: difference = 0, normal approximation."""
    if stderr <= 0:
        return 1.0 if diff == 0 else 0.0
    return math.erfc(abs(diff / stderr) / math.sqrt(2))


def verdict(value: float | None, min_retention: float) -> str:
    if value is None:
        return "n/a"
    return "PASS" if value >= min_retention else "FAIL"


@dataclass(frozen=True)
class Gate:
    passed: bool
    failing: tuple[str, ...]  # tasks (or "mean") below the bar
    mean: float | None  # mean retention over the gated tasks
    gated: tuple[str, ...]  # tasks with a defined retention
    min_retention: float
    gate_on: str

    def line(self) -> str:
        if not self.gated:
            return ("PASS (nothing to gate: no task has a defined retention; "
                    "the teacher scores 0 on every task)")
        mean = f"mean retention {self.mean:.3f}"
        if self.passed:
            return f"PASS: {mean}, every gated value >= {self.min_retention:g} ({self.gate_on})"
        return (f"FAIL: below retention {self.min_retention:g} ({self.gate_on}): "
                f"{', '.join(self.failing)}; {mean}")


def gate(retentions: Mapping[str, float | None], min_retention: float,
         gate_on: str = "each") -> Gate:
    """Pass when every task's retention (gate_on="each") or their mean ("mean") reaches the
    bar. Tasks with undefined retention are not gated."""
    defined = {task: r for task, r in retentions.items() if r is not None}
    mean = sum(defined.values()) / len(defined) if defined else None
    if gate_on == "mean":
        failing = ("mean",) if mean is not None and mean < min_retention else ()
    else:
        failing = tuple(task for task, r in defined.items() if r < min_retention)
    return Gate(not failing, failing, mean, tuple(defined), min_retention, gate_on)
