"""Loaders for the kdroute skill-suite tasks (referenced by the YAMLs as `!function utils.…`).

The data lives next to this file, so the tasks work from any working directory.
"""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


def _rows(split: str, family: str) -> list[dict]:
    path = DATA / f"{split}.jsonl"
    if not path.is_file():  # generated on first use if someone deleted the committed files
        from kdroute.evalsets import ensure

        ensure(DATA)
    with path.open(encoding="utf-8") as handle:
        return [row for line in handle if (row := json.loads(line))["family"] == family]


def load_family(family: str, **_metadata):
    """The test and validation splits of one family, as lm-eval expects (a DatasetDict)."""
    import datasets

    return datasets.DatasetDict({
        split: datasets.Dataset.from_list(_rows(split, family)) for split in ("test", "validation")
    })
