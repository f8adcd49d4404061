"""The identity of a local model folder: one hash for the bench's teacher cache and models table,
the distillation teacher cache and the student's model card, so the teacher fingerprint in a
`kdroute_card.json` is the one the ledger holds for that teacher."""

from __future__ import annotations

import hashlib
from pathlib import Path

# Files that define a local model's behaviour (config, weights, tokenizer, chat template);
# anything else in the folder (logs, checkpoint folders of other runs) does not change it.
FINGERPRINT_SUFFIXES = (".json", ".safetensors", ".bin", ".model", ".txt", ".jinja")


def model_fingerprint(path: str | Path) -> str:
    """sha256 of the defining files of a local model directory (their names and bytes, so stable
    across renames and copies of the folder), 16 hex digits."""
    digest = hashlib.sha256()
    files = sorted(p for p in Path(path).iterdir()
                   if p.is_file() and p.name.endswith(FINGERPRINT_SUFFIXES))
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]
