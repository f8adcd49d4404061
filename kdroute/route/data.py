"""Training and evaluation data for routers: paired teacher/student quality per prompt.

Two sources give the same `RoutingData`:
- the ledger's `bench_samples` (teacher and student rows of one bench run, paired on task+doc_id);
- recorded-response files in the RouteLLM format: a `prompt` column, one correctness column per
  model (True/False, 1/0 or a score in [0, 1]) and optional `<model>_response` columns; CSV or
  JSONL. `kdroute route import` copies such files into the ledger as an `import` run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kdroute.errors import InputError
from kdroute.jsonl import iter_jsonl

LABEL_RULES = ("teacher_right_student_wrong", "student_wrong", "score_gap", "expected_gain")
RESPONSE_SUFFIX = "_response"


@dataclass
class RoutingData:
    """N prompts with the student's and teacher's quality on each (in [0, 1])."""

    prompts: list[str]
    q_student: np.ndarray  # (N,)
    q_teacher: np.ndarray  # (N,)
    groups: list[str]  # (N,) task or file each prompt came from
    teacher: str = "teacher"
    student: str = "student"
    responses: dict[str, list[str]] = field(default_factory=dict)  # role -> (N,) texts
    # (N,) training weight of each prompt (None = all 1): shadow pairs from the ledger weigh
    # 1 / their inclusion probability, so the sampled traffic stands for all of it.
    weights: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, idx: Sequence[int] | np.ndarray) -> RoutingData:
        idx = np.asarray(idx, dtype=int)
        return RoutingData([self.prompts[i] for i in idx], self.q_student[idx],
                           self.q_teacher[idx], [self.groups[i] for i in idx], self.teacher,
                           self.student, {r: [v[i] for i in idx] for r, v in self.responses.items()},
                           None if self.weights is None else self.weights[idx])

    def labels(self, rule: str = "teacher_right_student_wrong", delta: float = 0.0) -> np.ndarray:
        return make_labels(self.q_student, self.q_teacher, rule, delta)

    def without(self, prompts: Iterable[str]) -> RoutingData:
        """Drop the given prompts (compared after whitespace normalisation)."""
        drop = {_norm(p) for p in prompts}
        return self.subset([i for i, p in enumerate(self.prompts) if _norm(p) not in drop])

    def swapped(self) -> RoutingData:
        """The same data with the teacher and student roles exchanged."""
        roles = {"teacher": "student", "student": "teacher"}
        return RoutingData(self.prompts, self.q_teacher, self.q_student, self.groups,
                           self.student, self.teacher,
                           {roles[r]: v for r, v in self.responses.items()}, self.weights)

    @staticmethod
    def concat(parts: Sequence[RoutingData]) -> RoutingData:
        if not parts:
            raise InputError("no routing data to combine")
        roles = set.intersection(*(set(p.responses) for p in parts))
        weights = None if all(p.weights is None for p in parts) else np.concatenate(
            [np.ones(len(p)) if p.weights is None else p.weights for p in parts])
        return RoutingData(
            [x for p in parts for x in p.prompts],
            np.concatenate([p.q_student for p in parts]),
            np.concatenate([p.q_teacher for p in parts]),
            [g for p in parts for g in p.groups], parts[0].teacher, parts[0].student,
            {r: [x for p in parts for x in p.responses[r]] for r in roles}, weights)


def _norm(text: str) -> str:
    return " ".join(str(text).replace("\u2019", "'").split())


def make_labels(q_student: np.ndarray, q_teacher: np.ndarray, rule: str = LABEL_RULES[0],
                delta: float = 0.0) -> np.ndarray:
    """(N,) training targets in [0, 1] for "teacher needed".

    Binary rules (0/1): teacher right and student wrong (scores >= 0.5 are right), student
    wrong, or teacher - student >= delta (strictly > 0 when delta is 0).
    `expected_gain` (soft): (teacher - student + 1) / 2, i.e. 1 where only the teacher is right,
    0 where only the student is, 0.5 where they tie. A scorer fitted to it estimates the expected
    quality gain of sending the prompt to the teacher, which is what the routing curve ranks by;
    the binary rule treats "both right" and "only the student right" alike.
    """
    qs, qt = np.asarray(q_student, float), np.asarray(q_teacher, float)
    if rule == "teacher_right_student_wrong":
        y = (qt >= 0.5) & (qs < 0.5)
    elif rule == "student_wrong":
        y = qs < 0.5
    elif rule == "score_gap":
        y = (qt - qs > 0) if delta <= 0 else (qt - qs >= delta)
    elif rule == "expected_gain":
        return np.clip((qt - qs + 1.0) / 2.0, 0.0, 1.0)
    else:
        raise InputError(f"unknown label rule {rule!r}; use one of {', '.join(LABEL_RULES)}")
    return y.astype(int)


def positive(labels: np.ndarray) -> np.ndarray:
    """(N,) bool "teacher needed" of binary or soft labels (soft: above the 0.5 tie)."""
    return np.asarray(labels, float) > 0.5


# --- RouteLLM-format files --------------------------------------------------------------------

def read_table(path: str | Path, allow_empty: bool = False) -> tuple[list[dict], list[str]]:
    """The rows of a CSV (values as strings) or JSONL file, and its columns in file order."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = [row for _, row in iter_jsonl(path)]
        columns = list(dict.fromkeys(k for r in rows for k in r))
    elif suffix == ".csv":
        import pandas as pd

        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except pd.errors.EmptyDataError:
            raise InputError(f"{path}: the file is empty") from None
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not a readable CSV: {exc}") from None
        rows, columns = frame.to_dict("records"), [str(c) for c in frame.columns]
    else:
        raise InputError(f"{path}: unsupported file type (use .csv or .jsonl)")
    if not rows and not allow_empty:
        raise InputError(f"{path}: no rows (the file is empty)")
    return rows, columns


_TRUE = {"true": 1.0, "1": 1.0, "yes": 1.0, "false": 0.0, "0": 0.0, "no": 0.0}


def _quality(value, path: Path, row: int, column: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and 0 <= value <= 1:
        return float(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return _TRUE[text]
    try:
        number = float(text)
    except ValueError:
        number = -1.0
    if 0 <= number <= 1:
        return number
    raise InputError(f"{path}: row {row}: column {column!r}: expected True/False or a score in "
                     f"[0, 1] (got {value!r})")


# `--group-by file`: each file is a group (the MMLU subject is in each file's name).
FILE_GROUP = "file"


def score_columns(path: Path, columns: Sequence[str], group_by: str | None = None) -> list[str]:
    if "prompt" not in columns:
        raise InputError(f"{path}: missing column 'prompt' (found: {', '.join(columns) or 'none'})")
    return [c for c in columns
            if c not in ("prompt", group_by) and not c.endswith(RESPONSE_SUFFIX)]


def _file_groups(path: Path, rows: list[dict], columns: Sequence[str],
                 group_by: str | None) -> list[str]:
    """(N,) group of each row: the file's stem, or the value of the `group_by` column."""
    if group_by in (None, FILE_GROUP):
        return [path.stem] * len(rows)
    if group_by not in columns:
        raise InputError(f"{path}: --group-by {group_by!r}: no such column (columns: "
                         f"{', '.join(columns)}; or use --group-by {FILE_GROUP})")
    return [str(r.get(group_by)) for r in rows]


def read_recorded_file(path: str | Path, teacher: str | None = None,
                       student: str | None = None, group_by: str | None = None) -> RoutingData:
    """One RouteLLM-format file. Without names, the two score columns are used and the one with
    the higher mean is the teacher. Groups are the file's stem, or a column's values."""
    path = Path(path)
    rows, columns = read_table(path)
    groups = _file_groups(path, rows, columns, group_by)
    candidates = score_columns(path, columns, group_by)
    for name in (teacher, student):
        if name is not None and name not in candidates:
            raise InputError(f"{path}: missing score column {name!r} "
                             f"(score columns: {', '.join(candidates) or 'none'})")
    if teacher is None or student is None:
        if len(candidates) != 2:
            raise InputError(f"{path}: expected two score columns besides 'prompt' (found "
                             f"{len(candidates)}: {', '.join(candidates) or 'none'}); name them "
                             f"with --teacher/--student")
    scores = {c: np.array([_quality(r.get(c), path, i + 2, c) for i, r in enumerate(rows)])
              for c in candidates if (teacher is None or student is None) or c in (teacher, student)}
    if teacher is None and student is None:  # the better model on this file is the teacher
        teacher, student = sorted(candidates, key=lambda c: -scores[c].mean())
    elif teacher is None:
        teacher = next(c for c in candidates if c != student)
    elif student is None:
        student = next(c for c in candidates if c != teacher)
    prompts = [str(r.get("prompt") or "") for r in rows]
    if not any(p.strip() for p in prompts):
        raise InputError(f"{path}: every prompt is empty")
    responses = {role: [str(r.get(f"{col}{RESPONSE_SUFFIX}") or "") for r in rows]
                 for role, col in (("teacher", teacher), ("student", student))
                 if f"{col}{RESPONSE_SUFFIX}" in rows[0]}
    return RoutingData(prompts, scores[student], scores[teacher], groups, teacher, student,
                       responses)


def recorded_files(paths: Sequence[str | Path]) -> list[Path]:
    """Files named, and the .csv/.jsonl files under folders named (skipping *contaminated*)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in (".csv", ".jsonl")
                           and "contaminated" not in f.name)
            if not found:
                raise InputError(f"{p}: no .csv or .jsonl files in this folder")
            out += found
        else:
            out.append(p)
    if not out:
        raise InputError("no input files given")
    return out


def read_recorded(paths: Sequence[str | Path], teacher: str | None = None,
                  student: str | None = None, exclude: Sequence[str | Path] = (),
                  group_by: str | None = None) -> RoutingData:
    """Several RouteLLM-format files (or folders of them) as one data set, minus excluded prompts.
    `group_by`: a column naming each row's group, or `file` (the default: the file's stem)."""
    files = recorded_files(paths)
    parts = [read_recorded_file(f, teacher, student, group_by) for f in files]
    names = {parts[0].teacher, parts[0].student}
    for part, f in zip(parts, files, strict=True):
        if {part.teacher, part.student} != names:
            raise InputError(f"{f}: score columns {part.teacher}, {part.student} differ from "
                             f"{files[0].name}'s ({', '.join(sorted(names))})")
    if teacher is None and student is None:  # the better model over all files is the teacher
        a, b = parts[0].teacher, parts[0].student
        q = {m: np.concatenate([p.q_teacher if p.teacher == m else p.q_student for p in parts])
             for m in (a, b)}
        teacher = a if q[a].mean() >= q[b].mean() else b
    parts = [p if p.teacher == teacher else p.swapped() for p in parts]
    data = RoutingData.concat(parts)
    for ex in exclude:
        data = data.without(read_prompt_list(ex))
    return data


def read_prompt_list(path: str | Path) -> list[str]:
    """Prompts listed in a file: JSONL field `eval_prompt` or `prompt`, or CSV column `prompt`."""
    path = Path(path)
    rows, _ = read_table(path, allow_empty=True)
    out = []
    for i, row in enumerate(rows, 1):
        value = row.get("eval_prompt", row.get("prompt"))
        if value is None:
            raise InputError(f"{path}: row {i} has no 'prompt' (or 'eval_prompt') field")
        out.append(str(value))
    return out
