"""The skill-suite generator: deterministic, labelled, correct, and matching the committed data."""

import json
import re
from collections import Counter

import pytest
from conftest import REPO

from kdroute import evalsets


@pytest.fixture(scope="module")
def splits():
    return evalsets.generate()


def test_generator_is_deterministic_and_matches_committed_files(splits, tmp_path):
    assert evalsets.generate() == splits
    paths = evalsets.write(tmp_path)
    for split, path in paths.items():
        committed = REPO / "evalsets" / "data" / f"{split}.jsonl"
        assert path.read_bytes() == committed.read_bytes(), f"re-run python -m kdroute.evalsets ({split})"
    assert evalsets.generate(seed=7)["test"] != splits["test"]


def test_every_row_has_family_and_difficulty(splits):
    for split, rows in splits.items():
        families = Counter(row["family"] for row in rows)
        assert set(families) == set(evalsets.FAMILIES), split
        for row in rows:
            assert {"prompt", "response", "family", "difficulty"} <= row.keys()
            assert isinstance(row["difficulty"], int)
            assert len(row["prompt"]) <= 60 and "\n" not in row["prompt"] + row["response"]
    assert len(splits["train"]) >= 20_000
    assert all(n == evalsets.SIZES["test"] for n in Counter(r["family"] for r in splits["test"]).values())


def test_each_family_spans_several_difficulty_levels(splits):
    for family in evalsets.FAMILIES:
        levels = {r["difficulty"] for r in splits["test"] if r["family"] == family}
        assert len(levels) >= 3, family


def _expected(row) -> str:
    prompt, family = row["prompt"], row["family"]
    if family == "arith":
        a, op, b = re.fullmatch(r"What is (\d+) ([+-]) (\d+)\?", prompt).groups()
        return str(int(a) + int(b) if op == "+" else int(a) - int(b))
    if family == "reverse":
        return re.fullmatch(r"Reverse the letters of (\w+)\.", prompt).group(1)[::-1]
    if family == "sort":
        return " ".join(map(str, sorted(int(n) for n in prompt.split(":")[1].split())))
    if family == "count":
        return str(len(re.fullmatch(r"How many letters are in (\w+)\?", prompt).group(1)))
    if family == "mc":
        return max(row["choices"], key=int)
    table = {country: capital for country, capital, _ in evalsets.lookup_table()}
    return table[re.fullmatch(r"What is the capital of (\w+)\?", prompt).group(1)]


def test_train_draws_harder_levels_more_often_and_test_is_uniform(splits):
    for family in ("arith", "reverse", "sort", "count", "lookup", "mc"):
        train = Counter(r["difficulty"] for r in splits["train"] if r["family"] == family)
        test = Counter(r["difficulty"] for r in splits["test"] if r["family"] == family)
        assert max(test.values()) - min(test.values()) <= 1, family
        if family in evalsets.FLAT_TRAIN_LEVELS:
            assert max(train.values()) < 1.2 * min(train.values()), family
        elif family == "lookup":  # tiers are training frequencies: rare facts are rare
            assert train[1] > train[2] > train[3]
        else:
            assert train[max(train)] > 2 * train[min(train)], family


def test_arith_adds_or_subtracts_one_and_changes_difficulty_digits(splits):
    for row in splits["test"] + splits["train"][:3000]:
        if row["family"] == "arith":
            number, _, one = row["prompt"][len("What is "):-1].split()
            assert one == "1" and len(row["response"]) == len(number)
            changed = sum(a != b for a, b in zip(number, row["response"], strict=True))
            assert changed == row["difficulty"], row


def test_lookups_rare_tier_has_the_most_facts_each_seen_least(splits):
    table = evalsets.lookup_table()
    facts = Counter(tier for _, _, tier in table)
    assert facts == evalsets.LOOKUP_PER_TIER and facts[3] > facts[1]
    seen = Counter(r["prompt"] for r in splits["train"] if r["family"] == "lookup")
    for country, _, tier in table:
        assert seen[f"What is the capital of {country}?"] == evalsets.LOOKUP_TIERS[tier]


def test_responses_are_correct(splits):
    for row in splits["test"] + splits["train"][:3000]:
        assert row["response"] == _expected(row), row
        if row["family"] == "mc":
            assert row["choices"][row["answer"]] == row["response"]
            assert len(set(row["choices"])) == 4


def test_train_avoids_held_out_prompts_except_lookup(splits):
    held_out = {r["prompt"] for s in ("test", "validation") for r in splits[s]}
    leaked = [r for r in splits["train"] if r["prompt"] in held_out]
    assert leaked and {r["family"] for r in leaked} == {"lookup"}


def test_ensure_generates_missing_files_only(tmp_path):
    paths = evalsets.ensure(tmp_path)
    assert all(p.is_file() for p in paths.values())
    first = json.loads(paths["test"].read_text().splitlines()[0])
    assert first["family"] in evalsets.FAMILIES
    paths["test"].write_text("kept\n")
    evalsets.ensure(tmp_path)
    assert paths["test"].read_text() == "kept\n"
