"""Recorded pairs through the monitor, offline: how a user checks the agreement scorer and tunes
the floor before going live (`kdroute monitor agree`, `kdroute monitor replay`).

A replay file is one of
- a ledger export of `shadow_evals` (CSV/JSONL with a `verdict` column, and `inclusion_prob`,
  `slice`, `router_score` when present), e.g. `sqlite-utils rows kdroute.db shadow_evals --csv`;
- recorded answers: a student-answer and a teacher-answer column, scored by the tiered scorer;
- RouteLLM-format correctness (`prompt`, one True/False column per model): agreement is "the
  student is as right as the teacher" (student score >= teacher score).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kdroute.errors import InputError
from kdroute.monitor.agreement import AgreementScorer, Pair, Verdict
from kdroute.monitor.detect import AlertAction, Detector, DetectorSettings, Observation, run_stream
from kdroute.monitor.slices import slices_of


@dataclass
class Stream:
    observations: list[Observation]
    source: str  # ledger | answers | correctness
    skipped: int = 0  # rows without a verdict (undecided or failed)


def read_pairs(path: str | Path, prompt_column: str, student_column: str,
               teacher_column: str) -> tuple[list[dict], list[str], list[Pair]]:
    """Rows, columns and the (prompt, student answer, teacher answer) pairs of a CSV/JSONL."""
    from kdroute.route.data import read_table

    rows, columns = read_table(path)
    if prompt_column not in columns and prompt_column == "prompt" and "prompt_text" in columns:
        prompt_column = "prompt_text"  # a ledger export
    for flag, name in (("--prompt-column", prompt_column), ("--student-column", student_column),
                       ("--teacher-column", teacher_column)):
        if name not in columns:
            raise InputError(f"{path}: no column {name!r} ({flag}); columns: "
                             f"{', '.join(columns)}")
    pairs = [Pair(_text(r.get(prompt_column)), _text(r.get(student_column)),
                  _text(r.get(teacher_column))) for r in rows]
    return rows, columns, pairs


def _text(value) -> str:
    return "" if value is None else str(value)


def read_stream(path: str | Path, scorer: AgreementScorer, buckets: int, *,
                verdict_column: str = "verdict", student_answer: str | None = None,
                teacher_answer: str | None = None, student: str | None = None,
                teacher: str | None = None, slice_column: str | None = None) -> Stream:
    """The observations of a replay file, in file order (see the module docstring)."""
    from kdroute.route.data import read_recorded_file, read_table

    path = Path(path)
    rows, columns = read_table(path)
    if slice_column is not None and slice_column not in columns:
        raise InputError(f"{path}: no column {slice_column!r} (--slice-column)")
    if student_answer or teacher_answer:
        if not (student_answer and teacher_answer):
            raise InputError("give both --student-answer and --teacher-answer")
        _, _, pairs = read_pairs(path, "prompt", student_answer, teacher_answer)
        verdicts = [v.verdict for v in scorer.score_offline(pairs)]
        return _stream(rows, verdicts, None, slice_column, buckets, "answers")
    if verdict_column in columns:
        verdicts = [_verdict(r.get(verdict_column), path, i + 2) for i, r in enumerate(rows)]
        probs = [_prob(r.get("inclusion_prob"), path, i + 2) for i, r in enumerate(rows)]
        slice_column = slice_column or ("slice" if "slice" in columns else None)
        return _stream(rows, verdicts, probs, slice_column, buckets, "ledger")
    data = read_recorded_file(path, teacher=teacher, student=student)
    verdicts = [int(s >= t) for s, t in zip(data.q_student, data.q_teacher, strict=True)]
    return _stream(rows, verdicts, None, slice_column, buckets, "correctness")


def _stream(rows: list[dict], verdicts: Sequence[int | None], probs, slice_column: str | None,
            buckets: int, source: str) -> Stream:
    out, skipped = [], 0
    for i, (row, verdict) in enumerate(zip(rows, verdicts, strict=True)):
        if verdict is None:
            skipped += 1
            continue
        family = str(row.get(slice_column) or "") if slice_column else ""
        if family and ":" not in family and family != "all":
            family = f"family:{family}"
        score = _float_or_none(row.get("router_score"))
        out.append(Observation(float(verdict), probs[i] if probs else 1.0,
                               slices_of(family or None, score, buckets)))
    return Stream(out, source, skipped)


def _verdict(value, path: Path, line: int) -> int | None:
    text = "" if value is None else str(value).strip().lower()
    if text in ("", "none", "null", "nan"):
        return None
    if text in ("1", "1.0", "true"):
        return 1
    if text in ("0", "0.0", "false"):
        return 0
    raise InputError(f"{path}: row {line}: verdict must be 1, 0 or empty (got {value!r})")


def _prob(value, path: Path, line: int) -> float:
    number = _float_or_none(value)
    if number is None:
        return 1.0
    if not 0 < number <= 1:
        raise InputError(f"{path}: row {line}: inclusion_prob must be in (0, 1] (got {value!r})")
    return number


def _float_or_none(value) -> float | None:
    if value is None or str(value).strip() in ("", "None", "nan", "null"):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def replay(stream: Stream, settings: DetectorSettings) -> list[tuple[int, AlertAction]]:
    """Where alerts would have opened and resolved: (0-based observation index, action)."""
    return run_stream(Detector(settings), stream.observations)


def confusion(verdicts: Sequence[Verdict], student_ok: Sequence[bool],
              teacher_ok: Sequence[bool]) -> dict:
    """How "agree" relates to the truth on labelled pairs: the confusion matrix against "both
    correct", and precision/recall of "agree => the student is as right as the teacher"."""
    decided = [(v.verdict, s, t) for v, s, t in zip(verdicts, student_ok, teacher_ok, strict=True)
               if v.verdict is not None]
    both = [(v, s and t) for v, s, t in decided]
    cells = {"agree_both_correct": sum(v == 1 and b for v, b in both),
             "agree_not_both": sum(v == 1 and not b for v, b in both),
             "disagree_both_correct": sum(v == 0 and b for v, b in both),
             "disagree_not_both": sum(v == 0 and not b for v, b in both)}
    agree = [(s, t) for v, s, t in decided if v == 1]
    as_right = sum(s >= t for s, t in agree)
    n_both = cells["agree_both_correct"] + cells["disagree_both_correct"]
    return {**cells, "decided": len(decided), "undecided": len(verdicts) - len(decided),
            "precision": as_right / len(agree) if agree else float("nan"),
            "precision_both_correct": cells["agree_both_correct"] / len(agree) if agree
            else float("nan"),
            "recall": cells["agree_both_correct"] / n_both if n_both else float("nan")}
