"""The learning loop's second half: the teacher's answers to the user's own traffic, as the next
distillation set (`kdroute distill data --from-ledger`).

The monitor shadows a sample of student-served requests: the teacher answers them again in the
background and the two answers are compared. Where they disagreed, the teacher's answer is what
the student should have said, so those (prompt, teacher answer) pairs are exported as the
prompt/response JSONL that `kdroute distill` trains on; `every=True` exports every shadowed
prompt (agreements too: more data, less focused). The first half, router training on the same
pairs, is `kdroute.route.train.learning_data`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from kdroute.errors import InputError

if TYPE_CHECKING:
    from kdroute.store import Store


def distill_rows(store: Store, every: bool = False, student_model: str | None = None
                 ) -> list[dict]:
    """Prompt/response rows (the teacher's answer) from the ledger's shadow pairs."""
    pairs = [p for p in store.shadow_pairs(student_model) if p["teacher_response"]]
    if not pairs:
        raise InputError("the ledger has no shadow pairs with a prompt and the teacher's answer: "
                         "serve with monitor.store_pairs = true and let the monitor shadow "
                         "some traffic")
    chosen = pairs if every else [p for p in pairs if p["verdict"] == 0]
    if not chosen:
        raise InputError(f"the teacher agreed with the student on all {len(pairs)} shadow "
                         "pairs: nothing to distil (--all exports every shadowed prompt)")
    out = []
    for p in chosen:
        row = {"prompt": p["prompt"], "response": p["teacher_response"],
               "source": "shadow", "request_id": p["request_id"],
               "student_agreed": bool(p["verdict"]), "teacher": p["teacher_model"],
               "student": p["student_model"]}
        if (p["slice"] or "").startswith("family:"):  # distill balances on `family`
            row["family"] = p["slice"].removeprefix("family:")
        out.append(row)
    return out


def write_distill_data(store: Store, path: str | Path, every: bool = False,
                       student_model: str | None = None) -> int:
    """Write the rows of `distill_rows` as JSONL to `path`; returns how many."""
    rows = distill_rows(store, every, student_model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows)
