"""Training data: prompt/response JSONL -> token ids with the prompt masked out of the loss,
padded batches, and a data order that is a pure function of (seed, step) so `--resume` replays
exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kdroute.errors import InputError
from kdroute.jsonl import iter_jsonl

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    """One training sequence: input_ids (T,) and labels (T,), labels = ids with -100 on the prompt."""

    input_ids: list[int]
    labels: list[int]


def read_pairs(path: str | Path) -> list[dict]:
    """Rows of a prompt/response JSONL file; a missing file or a bad row is a one-line InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: training data not found (a JSONL file of prompt/response rows)")
    rows = []
    for number, row in iter_jsonl(path):
        if not isinstance(row.get("prompt"), str) or not isinstance(row.get("response"), str):
            raise InputError(f"{path}:{number}: each row needs string fields prompt and response")
        rows.append(row)
    if not rows:
        raise InputError(f"{path}: no rows")
    return rows


def file_hash(path: str | Path) -> str:
    """sha256 of a file's bytes (the data part of cache keys and model cards)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def render(tokenizer, prompt: str, response: str) -> tuple[str, str]:
    """(prompt text, full text) in the tokenizer's chat template, else kdroute's shared format."""
    from kdroute.tinymodels import format_prompt, format_response

    if getattr(tokenizer, "chat_template", None):
        user = [{"role": "user", "content": prompt}]
        head = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(
            [*user, {"role": "assistant", "content": response}], tokenize=False)
        if full.startswith(head):
            return head, full
    head = format_prompt(prompt)
    return head, head + format_response(response)


def encode_pairs(tokenizer, rows: list[dict], max_length: int) -> list[Encoded]:
    """Tokenize rows; the prompt's tokens get label -100, the response and <eos> are learned.
    Sequences longer than max_length are cut from the right."""
    heads, fulls = zip(*(render(tokenizer, r["prompt"], r["response"]) for r in rows), strict=True)
    head_ids = tokenizer(list(heads), add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(list(fulls), add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    out = []
    for head, full in zip(head_ids, full_ids, strict=True):
        ids = (full + ([eos] if eos is not None else []))[:max_length]
        n_prompt = min(len(head), len(ids))
        out.append(Encoded(ids, [IGNORE_INDEX] * n_prompt + ids[n_prompt:]))
    return out


def collate(examples: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest: input_ids, attention_mask, labels, all (B, T)."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def stratified_subset(rows: list[dict], n: int | None, seed: int,
                      weights: list[float] | None = None) -> list[int]:
    """Sorted indices of `n` rows balanced over their `family` field (rows without one form one
    group): an equal share per family, a small family's unused share spread over the others,
    the rows of each family drawn by a pure function of `seed`. n = None or >= len(rows): all.
    `weights` (one > 0 per row) draws each family's rows in proportion to them, without
    replacement; either way a smaller `n` picks a subset of a larger one's rows."""
    if weights is not None and (len(weights) != len(rows) or min(weights, default=1) <= 0):
        raise InputError(f"stratified_subset needs one weight > 0 per row ({len(rows)} rows)")
    if n is None or n >= len(rows):
        return list(range(len(rows)))
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(str(row.get("family")), []).append(i)
    quota = dict.fromkeys(groups, 0)
    left, open_ = n, sorted(groups)
    while left > 0:  # water-filling: equal shares, capped by each family's size
        share, extra = divmod(left, len(open_))
        for j, name in enumerate(open_):
            quota[name] += min(share + (j < extra), len(groups[name]) - quota[name])
        left = n - sum(quota.values())
        open_ = [name for name in open_ if quota[name] < len(groups[name])]
    picked: list[int] = []
    for name in sorted(groups):
        members = list(groups[name])
        rng = random.Random(f"{seed}:{name}")
        rng.shuffle(members)
        if weights is not None:  # Efraimidis-Spirakis: the largest u ** (1 / w) first
            keys = {i: rng.random() ** (1 / weights[i]) for i in members}
            members.sort(key=keys.__getitem__, reverse=True)
        picked.extend(members[: quota[name]])
    return sorted(picked)


def epoch_order(n_examples: int, seed: int, epoch: int) -> list[int]:
    """The shuffled example order of one epoch, fixed by (seed, epoch)."""
    import torch

    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n_examples, generator=generator).tolist()


def step_indices(n_examples: int, seed: int, step: int, per_step: int) -> list[int]:
    """Example indices of optimizer step `step` (0-based): positions [step·per_step, …) of the
    endless stream of shuffled epochs. Pure, so a resumed run sees the same batches."""
    start = step * per_step
    out: list[int] = []
    while len(out) < per_step:
        epoch, offset = divmod(start + len(out), n_examples)
        order = epoch_order(n_examples, seed, epoch)
        out.extend(order[offset: offset + per_step - len(out)])
    return out


def micro_batches(indices: list[int], batch_size: int, grad_accum: int, world_size: int,
                  rank: int) -> list[list[int]]:
    """This process's share of one step's indices (batch_size · grad_accum · world_size of them):
    grad_accum micro-batches of batch_size, interleaved across processes."""
    chunks = [indices[i: i + batch_size] for i in range(0, len(indices), batch_size)]
    return [chunks[m * world_size + rank] for m in range(grad_accum)]
