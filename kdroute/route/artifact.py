"""The router artifact: `<name>.json` (readable metadata) + `<name>.npz` (the scorer's arrays).

No pickle: a learned scorer is stored as JSON parameters plus plain numpy arrays, so loading an
artifact never runs code from the file. The JSON records the scorer, the threshold, the calibration
target it was picked for, the teacher/student pair the labels came from, the label rule and the
offline metrics; `version` names it in the ledger and on every routed request.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from kdroute.errors import InputError
from kdroute.route.base import Scorer
from kdroute.route.registry import scorer_class

FORMAT = "kdroute-router/1"


@dataclass
class Artifact:
    scorer: Scorer
    threshold: float
    version: str = ""
    calibration: dict[str, Any] = field(default_factory=dict)
    teacher: str | None = None
    student: str | None = None
    label_rule: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""

    def meta(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": self.version, "scorer": self.scorer.name,
                "threshold": self.threshold, "calibration": self.calibration,
                "teacher": self.teacher, "student": self.student, "label_rule": self.label_rule,
                "metrics": self.metrics, "created_at": self.created_at}


def _arrays_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def save_artifact(artifact: Artifact, path: str | Path) -> Path:
    """Write `path` (.json) and its `.npz` beside it; fill in version and created_at if unset."""
    path = Path(path)
    if path.suffix != ".json":
        path = path.with_suffix(".json")
    params, arrays = artifact.scorer.state()
    blob = _arrays_bytes(arrays)
    digest = hashlib.sha256(blob + json.dumps(params, sort_keys=True).encode()).hexdigest()
    if not artifact.created_at:
        artifact.created_at = datetime.now(UTC).isoformat(timespec="seconds")
    if not artifact.version:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        artifact.version = f"{artifact.scorer.name}-{stamp}-{digest[:6]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    npz = path.with_suffix(".npz")
    npz.write_bytes(blob)
    meta = artifact.meta() | {"params": params, "arrays": npz.name,
                              "arrays_sha256": hashlib.sha256(blob).hexdigest()}
    path.write_text(json.dumps(meta, indent=2, default=_json_default) + "\n", encoding="utf-8")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def load_artifact(path: str | Path) -> Artifact:
    """Read an artifact written by `save_artifact`; every problem is one InputError line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: router artifact not found (train one with `kdroute route train`)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a router artifact: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{path}: not a router artifact (expected format {FORMAT!r})")
    npz = path.with_name(meta.get("arrays") or path.with_suffix(".npz").name)
    try:
        blob = npz.read_bytes()
    except OSError:
        raise InputError(f"{path}: its arrays file {npz.name} is missing") from None
    if hashlib.sha256(blob).hexdigest() != meta.get("arrays_sha256"):
        raise InputError(f"{path}: {npz.name} does not match the artifact (checksum differs)")
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    scorer = scorer_class(meta["scorer"]).from_state(meta.get("params") or {}, arrays)
    return Artifact(scorer=scorer, threshold=float(meta["threshold"]), version=meta["version"],
                    calibration=meta.get("calibration") or {}, teacher=meta.get("teacher"),
                    student=meta.get("student"), label_rule=meta.get("label_rule"),
                    metrics=meta.get("metrics") or {}, created_at=meta.get("created_at", ""))
