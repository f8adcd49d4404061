"""What every benchmark shares: where results go and the provenance stamped on them."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHARED_DATA = ROOT.parent / "shared" / "data"

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def provenance() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpu "
                   f"python {platform.python_version()}",
    }


def claim(figure: str, value, target: str | None = None, met: bool | None = None) -> dict:
    """One row of a benchmark's headline table in RESULTS.md: what was measured, its value, the
    target it is held to (as text, e.g. ">= 0.95") and whether the target was met."""
    return {"figure": figure, "value": value, "target": target, "met": met}


def write_result(name: str, figures: dict) -> Path:
    """Write benchmarks/results/<name>.json with the figures and their provenance.

    Optional keys that RESULTS.md renders for people: `claims` (a list of `claim(...)` rows, the
    headline table) and `plots` (image paths relative to benchmarks/, embedded below it)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**figures, "provenance": provenance()}, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return path
