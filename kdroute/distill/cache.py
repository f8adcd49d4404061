"""Teacher signals that do not need the teacher at training time.

- The **top-k cache**: the teacher's k most likely next tokens and their log-probs (at the loss
  temperature) for every learned position of the training set, computed once and stored in
  shards under a folder named by a key of (teacher fingerprint, tokenizer, data hash, k,
  temperature, max length). Shards are written atomically, so an interrupted build resumes where
  it stopped; any student trained on the same data reuses it, for any number of epochs.
- **Sequence-level** data: the teacher's own answers to the training prompts, saved as a
  prompt/response JSONL the student then learns by plain cross-entropy (the path for a teacher
  with another tokenizer or behind an API).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from kdroute.distill.data import IGNORE_INDEX, Encoded, collate
from kdroute.fingerprint import model_fingerprint  # noqa: F401  (importable here, as before)

if TYPE_CHECKING:
    import torch

SHARD_EXAMPLES = 4096


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's full definition and chat template."""
    text = tokenizer.backend_tokenizer.to_str() + (getattr(tokenizer, "chat_template", "") or "")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_key(teacher_fp: str, tokenizer_fp: str, data_hash: str, k: int, temperature: float,
              max_length: int) -> str:
    blob = json.dumps([teacher_fp, tokenizer_fp, data_hash, k, float(temperature), max_length])
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class TeacherCache:
    """A complete top-k cache loaded in memory: values (N_tok, k) float16, indices (N_tok, k)
    int16/int32, tails (N_tok,) float32 log-mass outside the top k, offsets (n_examples + 1,)
    into them; one row per learned position."""

    def __init__(self, directory: str | Path):
        import torch
        from safetensors.torch import load_file

        self.directory = Path(directory)
        self.meta = json.loads((self.directory / "meta.json").read_text())
        shards = [load_file(self.directory / name) for name in self.meta["shards"]]
        self.values = torch.cat([s["values"] for s in shards])
        self.indices = torch.cat([s["indices"] for s in shards])
        self.tails = torch.cat([s["tails"] for s in shards])
        counts = torch.cat([s["counts"] for s in shards])
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.long().cumsum(0)])
        self.k = int(self.meta["k"])

    def batch(self, example_ids: list[int], shifted_labels: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher top-k of a batch aligned with its shifted labels (B, T):
        -> log-probs (B, T, k) float32, token ids (B, T, k) long, tail log-mass (B, T) float32.
        Positions without a label get a harmless uniform distribution (the loss masks them)."""
        import torch

        b, t = shifted_labels.shape
        values = torch.full((b, t, self.k), -math.log(self.k))
        indices = torch.arange(self.k).expand(b, t, self.k).clone()
        tails = torch.full((b, t), -30.0)
        for row, ex in enumerate(example_ids):
            lo, hi = int(self.offsets[ex]), int(self.offsets[ex + 1])
            positions = (shifted_labels[row] != IGNORE_INDEX).nonzero().squeeze(-1)
            if len(positions) != hi - lo:
                raise ValueError(f"teacher cache {self.directory} does not match the data "
                                 f"(example {ex}: {hi - lo} cached positions, {len(positions)} now)")
            values[row, positions] = self.values[lo:hi].float()
            indices[row, positions] = self.indices[lo:hi].long()
            tails[row, positions] = self.tails[lo:hi].float()
        return values, indices, tails


def build_topk_cache(teacher, encoded: list[Encoded], directory: str | Path, *, k: int,
                     temperature: float, vocab_size: int, pad_id: int, batch_size: int = 64,
                     meta: dict | None = None, progress: bool = True) -> dict:
    """Compute (or finish computing) the top-k cache of `teacher` over `encoded` into
    `directory`. Returns the meta dict, with bytes_per_token."""
    import torch
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from kdroute.distill.losses import (
        causal_shift,
        slice_vocab,
        tail_log_prob,
        teacher_topk,
        valid_mask,
    )

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    index_dtype = torch.int16 if vocab_size <= 32767 else torch.int32
    names = [f"shard-{i:05d}.safetensors" for i in range(math.ceil(len(encoded) / SHARD_EXAMPLES))]
    teacher.eval()
    bar = tqdm(total=len(encoded), desc="teacher top-k cache", disable=not progress, unit="ex")
    for number, name in enumerate(names):
        lo, hi = number * SHARD_EXAMPLES, min(len(encoded), (number + 1) * SHARD_EXAMPLES)
        if (directory / name).is_file():  # done by an earlier, interrupted build
            bar.update(hi - lo)
            continue
        values, indices, tails, counts = [], [], [], []
        for start in range(lo, hi, batch_size):
            chunk = encoded[start: min(hi, start + batch_size)]
            batch = collate(chunk, pad_id)
            with torch.no_grad():
                logits = teacher(input_ids=batch["input_ids"],
                                 attention_mask=batch["attention_mask"]).logits
            logits, labels = causal_shift(slice_vocab(logits, vocab_size), batch["labels"])
            v, i = teacher_topk(logits, k, temperature)  # (B, T, k)
            mask = valid_mask(labels)
            values.append(v[mask].half())
            indices.append(i[mask].to(index_dtype))
            tails.append(tail_log_prob(v)[mask])  # float32, before rounding
            counts.append(mask.sum(1).int())
            bar.update(len(chunk))
        tmp = directory / (name + ".tmp")
        save_file({"values": torch.cat(values), "indices": torch.cat(indices),
                   "tails": torch.cat(tails), "counts": torch.cat(counts)}, tmp)
        os.replace(tmp, directory / name)  # atomic: a shard is there whole or not at all
    bar.close()
    n_tokens = sum(sum(1 for x in e.labels[1:] if x != IGNORE_INDEX) for e in encoded)
    n_bytes = sum((directory / name).stat().st_size for name in names)
    info = {**(meta or {}), "k": k, "temperature": temperature, "shards": names,
            "examples": len(encoded), "tokens": n_tokens, "bytes": n_bytes,
            "bytes_per_token": n_bytes / max(n_tokens, 1)}
    (directory / "meta.json").write_text(json.dumps(info, indent=2))
    return info


def generate_responses(teacher, tokenizer, prompts: list[str], *, max_new_tokens: int = 32,
                       do_sample: bool = False, sampling_temperature: float = 1.0,
                       batch_size: int = 64, progress: bool = True) -> list[str]:
    """The teacher's answers to `prompts` in the shared format (greedy unless do_sample),
    for sequence-level distillation."""
    import torch
    from tqdm.auto import tqdm

    from kdroute.distill.data import render

    tokenizer.padding_side = "left"
    teacher.eval()
    answers: list[str] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="teacher answers",
                      disable=not progress):
        heads = [render(tokenizer, p, "")[0] for p in prompts[start: start + batch_size]]
        batch = tokenizer(heads, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = teacher.generate(**batch, max_new_tokens=max_new_tokens, do_sample=do_sample,
                                   temperature=sampling_temperature if do_sample else None,
                                   pad_token_id=tokenizer.pad_token_id)
        for row in out[:, batch["input_ids"].shape[1]:]:
            text = tokenizer.decode(row, skip_special_tokens=True)
            answers.append(text.split("\n", 1)[0].strip())
    tokenizer.padding_side = "right"
    return answers
