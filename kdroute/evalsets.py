"""The skill suite: a deterministic generator of the synthetic tasks tiny local models learn.

`python -m kdroute.evalsets` writes `evalsets/data/{train,validation,test}.jsonl`. Every row is

    {"prompt": "What is 347 + 85?", "response": "432", "family": "arith", "difficulty": 3}

plus `choices` and `answer` (index into choices) for multiple-choice rows, whose `response` is
the correct choice's text. The prompt is the user's message only; the shared Q/A wrapping lives
in `kdroute.tinymodels.format_prompt` / `format_response` (and in the lm-eval YAMLs).

Six families, each with a difficulty in its own natural unit:

    arith    a number +/- 1         difficulty = digits the carry or borrow changes (1-7)
    reverse  reverse a string       difficulty = string length (2-12)
    sort     sort digits (repeats)  difficulty = how many digits (2-10)
    count    length of a string     difficulty = string length (2-13)
    lookup   made-up capitals       difficulty = frequency tier in train (1 common - 3 rare:
                                    60 facts seen 6 times each, against 20 seen 80 times)
    mc       pick the largest of 4  difficulty = digits of the numbers (1-4); scored by loglik

Levels are uniform in validation and test; train draws harder levels more often (but reverse's
levels uniformly). Validation and test are drawn first and train avoids their
prompts (after MAX_RETRIES draws it would accept a collision; none happens with this seed), so even
the smallest levels test generalisation. Every level has enough distinct prompts for that: suite v3
drew arithmetic by the number's length, and its 2-digit carries ("49 + 1") were so few that the
held-out splits took them all and no model saw one. Lookup is memorisation: its facts recur in
every split by design.
The same seed gives byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import random
import string
from collections.abc import Callable, Iterator
from pathlib import Path

SEED = 1234
DATA_DIR = Path(__file__).resolve().parents[1] / "evalsets" / "data"
SPLITS = ("test", "validation", "train")  # order matters: train avoids the held-out prompts
# Items per family and split. Lookup train size follows from its frequency tiers.
SIZES = {"train": 6000, "validation": 100, "test": 300}
LOOKUP_TIERS = {1: 80, 2: 25, 3: 6}  # tier -> training repeats of each fact
LOOKUP_PER_TIER = {1: 20, 2: 20, 3: 60}  # tier -> facts: the rare tier is also the widest
TRAIN_LEVEL_WEIGHT = 0.5  # train draws level i (0 = easiest) with weight 1 + 0.5 i
# ...except reverse, drawn uniformly: its short strings are the ones a small student got wrong
# (2 letters: 0.64 for the v2 student), and the teacher reversed 12 letters from fewer rows
FLAT_TRAIN_LEVELS = frozenset({"reverse"})
MAX_RETRIES = 50  # draws tried before accepting a train item that collides with a held-out one

Item = dict


def _arith(rng: random.Random, level: int) -> Item:
    """A number plus or minus one where exactly `level` digits change: it ends in a run of
    level-1 nines (for +) or zeros (for -) that the carry or borrow ripples through, after a
    2-3 digit head (so every level has a thousand-odd distinct prompts). Level 1 changes the
    last digit only; a one-digit addend, or full addition, stays out of reach at this scale
    (the v2 teacher scored 0.05 on them)."""
    run = level - 1
    digits = rng.randint(2, 3)
    while True:
        head = rng.randint(10 ** (digits - 1), 10**digits - 1)
        if rng.random() < 0.5:
            if head % 10 != 9:  # ...3 + 1 or ...399 + 1: exactly `level` digits change
                number = head * 10**run + (10**run - 1)
                return {"prompt": f"What is {number} + 1?", "response": str(number + 1)}
        elif head % 10 != 0:  # ...3 - 1 or ...300 - 1
            number = head * 10**run
            return {"prompt": f"What is {number} - 1?", "response": str(number - 1)}


def _reverse(rng: random.Random, level: int) -> Item:
    word = "".join(rng.choices(string.ascii_lowercase, k=level))
    return {"prompt": f"Reverse the letters of {word}.", "response": word[::-1]}


def _sort(rng: random.Random, level: int) -> Item:
    """`level` digits, repeats allowed: the model must keep count of each digit's copies."""
    numbers = [rng.randrange(10) for _ in range(level)]
    return {"prompt": "Sort ascending: " + " ".join(map(str, numbers)),
            "response": " ".join(map(str, sorted(numbers)))}


def _count(rng: random.Random, level: int) -> Item:
    word = "".join(rng.choices(string.ascii_lowercase, k=level))
    return {"prompt": f"How many letters are in {word}?", "response": str(level)}


def _mc(rng: random.Random, level: int) -> Item:
    low = 10 ** (level - 1) if level > 1 else 0
    choices = [str(n) for n in rng.sample(range(low, 10**level), 4)]
    answer = max(range(4), key=lambda i: int(choices[i]))
    return {"prompt": "Which is largest: " + ", ".join(choices) + "?",
            "response": choices[answer], "choices": choices, "answer": answer}


GENERATORS: dict[str, tuple[Callable[[random.Random, int], Item], range]] = {
    "arith": (_arith, range(1, 8)),
    "reverse": (_reverse, range(2, 13)),
    "sort": (_sort, range(2, 11)),
    "count": (_count, range(2, 14)),
    "mc": (_mc, range(1, 5)),
}
FAMILIES = ("arith", "reverse", "sort", "count", "lookup", "mc")


def _name(rng: random.Random, syllables: int) -> str:
    onsets, vowels, codas = "bdfgklmnprstvz", "aeiou", ["", "", "n", "r", "l", "s"]
    parts = [rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(syllables)]
    return "".join(parts).capitalize()


def lookup_table(seed: int = SEED) -> list[tuple[str, str, int]]:
    """(country, capital, tier) for the made-up world; names are unique."""
    rng = random.Random(f"{seed}-lookup-table")
    seen: set[str] = set()
    table = []
    for tier in LOOKUP_TIERS:
        while sum(1 for row in table if row[2] == tier) < LOOKUP_PER_TIER[tier]:
            country, capital = _name(rng, rng.choice((2, 3))) + "ia", _name(rng, 2)
            if country in seen or capital in seen:
                continue
            seen.update((country, capital))
            table.append((country, capital, tier))
    return table


def _lookup_items(split: str, seed: int) -> list[Item]:
    rng = random.Random(f"{seed}-{split}-lookup")
    table = lookup_table(seed)
    if split == "train":
        rows = [row for row in table for _ in range(LOOKUP_TIERS[row[2]])]
    else:  # tiers uniform, as every family's levels are in the held-out splits
        by_tier = {tier: [row for row in table if row[2] == tier] for tier in LOOKUP_TIERS}
        rows = [rng.choice(by_tier[1 + i % len(by_tier)]) for i in range(SIZES[split])]
    items = [{"prompt": f"What is the capital of {country}?", "response": capital,
              "family": "lookup", "difficulty": tier} for country, capital, tier in rows]
    rng.shuffle(items)
    return items


def _family_items(family: str, split: str, seed: int, held_out: set[str]) -> list[Item]:
    make, levels = GENERATORS[family]
    rng = random.Random(f"{seed}-{split}-{family}")
    items = []
    slope = 0.0 if family in FLAT_TRAIN_LEVELS else TRAIN_LEVEL_WEIGHT
    weights = [1 + slope * i for i in range(len(levels))]
    for i in range(SIZES[split]):
        # held-out splits: levels uniform; train: harder levels drawn more often (they need more
        # examples to learn, and the easy ones have few distinct prompts anyway)
        level = (levels[i % len(levels)] if split != "train"
                 else rng.choices(levels, weights=weights)[0])
        for _ in range(MAX_RETRIES):
            item = make(rng, level)
            if item["prompt"] not in held_out:
                break
        items.append({**item, "family": family, "difficulty": level})
    rng.shuffle(items)
    return items


def generate(seed: int = SEED) -> dict[str, list[Item]]:
    """All splits, families interleaved in a fixed order (deterministic for a given seed)."""
    held_out: set[str] = set()
    splits: dict[str, list[Item]] = {}
    for split in SPLITS:
        per_family = [
            _lookup_items(split, seed) if family == "lookup"
            else _family_items(family, split, seed, held_out if split == "train" else set())
            for family in FAMILIES
        ]
        rows = [item for family_items in per_family for item in family_items]
        random.Random(f"{seed}-{split}-mix").shuffle(rows)
        splits[split] = rows
        if split != "train":
            held_out.update(item["prompt"] for item in rows)
    return splits


def _jsonl(rows: list[Item]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row, separators=(",", ":"), ensure_ascii=False) + "\n"


def write(out_dir: str | Path = DATA_DIR, seed: int = SEED) -> dict[str, Path]:
    """Write every split to `out_dir/<split>.jsonl`; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in generate(seed).items():
        path = out / f"{split}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(_jsonl(rows)), encoding="utf-8")
        tmp.replace(path)  # readers never see a half-written file
        paths[split] = path
    return paths


def ensure(out_dir: str | Path = DATA_DIR, seed: int = SEED) -> dict[str, Path]:
    """The split files, generated first if any is missing."""
    out = Path(out_dir)
    paths = {split: out / f"{split}.jsonl" for split in SPLITS}
    if not all(p.is_file() for p in paths.values()):
        return write(out, seed)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m kdroute.evalsets",
        description="Write the kdroute skill suite (train/validation/test JSONL).")
    parser.add_argument("--out", default=str(DATA_DIR), help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=SEED, help="generator seed (default: %(default)s)")
    args = parser.parse_args(argv)
    for split, path in write(args.out, args.seed).items():
        n = sum(1 for _ in path.open(encoding="utf-8"))
        print(f"{split:<10} {n:>6} items  {path.stat().st_size / 1e6:5.2f} MB  {path}")


if __name__ == "__main__":
    main()
