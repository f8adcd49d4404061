"""`kdroute route score`: the router's score for every row of a CSV/JSONL file, in order."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING

from kdroute.errors import InputError
from kdroute.route.data import read_table

if TYPE_CHECKING:
    from kdroute.config import Settings

CHUNK = 256


def _conversation(row: dict, path: Path, n: int):
    if isinstance(row.get("messages"), list):
        return row["messages"]
    if "prompt" in row and row["prompt"] is not None:
        return str(row["prompt"])
    raise InputError(f"{path}: row {n} has no 'prompt' (or 'messages') field")


def score_file(settings: Settings, router_path: Path | None, input_path: Path,
               output_path: Path) -> tuple[int, str]:
    """Write input rows plus `score` and `route`; returns (rows, router version)."""
    from kdroute.route import Router, load_router, router_from_artifact
    from kdroute.route.artifact import load_artifact

    rows, columns = read_table(input_path)
    conversations = [_conversation(r, input_path, i + 1) for i, r in enumerate(rows)]
    router: Router = (router_from_artifact(load_artifact(router_path), 0) if router_path
                      else load_router(settings))
    scores: list[float] = []
    for start in range(0, len(conversations), CHUNK):
        scores += router.score(conversations[start:start + CHUNK])
    for row, s in zip(rows, scores, strict=True):
        row["score"] = s
        row["route"] = "teacher" if s >= router.threshold else "student"
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    if output_path.suffix.lower() == ".jsonl":
        with output_path.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    elif output_path.suffix.lower() == ".csv":
        fields = [c for c in columns if c not in ("score", "route")] + ["score", "route"]
        with output_path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: (json.dumps(v) if isinstance(v, list | dict) else v)
                                 for k, v in row.items()})
    else:
        raise InputError(f"{output_path}: unsupported output type (use .csv or .jsonl)")
    return len(rows), router.version
