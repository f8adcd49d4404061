"""The worse student of `kdroute demo --drift`: a deterministic degraded copy of the student.

A bad release is simulated by adding seeded Gaussian noise to every weight matrix, scaled to
that matrix's own spread, so the copy keeps the student's architecture, tokenizer and prices and
only its answers get worse. The same student and seed always give the same bytes, so a re-run
reuses the copy (its source fingerprint is recorded next to it).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from kdroute.fingerprint import model_fingerprint

NOISE = 0.5  # noise standard deviation as a fraction of each tensor's standard deviation
SEED = 0
MARKER = "kdroute_degraded.json"
WEIGHTS = "model.safetensors"


def degraded_copy(student: Path, out: Path, noise: float = NOISE, seed: int = SEED) -> Path:
    """Write (or reuse) the degraded copy of `student` at `out`; returns `out`."""
    source = model_fingerprint(student)
    recipe = {"source_fingerprint": source, "noise": noise, "seed": seed}
    marker = out / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == recipe:
        return out
    import torch
    from safetensors.torch import load_file, save_file

    if not (student / WEIGHTS).is_file():
        from kdroute.errors import InputError

        raise InputError(f"{student}: no {WEIGHTS} to degrade (the demo student is saved with "
                         "save_pretrained)")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for file in student.iterdir():
        if file.is_file() and file.name != WEIGHTS:
            shutil.copy2(file, out / file.name)
    tensors = load_file(student / WEIGHTS)
    gen = torch.Generator().manual_seed(seed)
    for name in sorted(tensors):  # sorted: the same noise whatever order the file lists them in
        t = tensors[name]
        if t.is_floating_point() and t.dim() >= 2:  # weight matrices; biases and norms kept
            spread = t.float().std()
            tensors[name] = (t + noise * spread * torch.randn(t.shape, generator=gen)).to(t.dtype)
        tensors[name] = tensors[name].contiguous()
    save_file(tensors, out / WEIGHTS, metadata={"format": "pt"})
    marker.write_text(json.dumps(recipe))
    return out
