"""The demo student's training file: the cross-entropy baseline's labelled rows, plus further
training prompts whose gold answers are replaced by the teacher's (generated, or for a
multiple-choice row the likeliest of its choices)."""

import json

import pytest

from kdroute.distill import presets
from kdroute.distill.data import read_pairs
from kdroute.tinymodels import save_tiny_model


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("preset")
    rows = [{"prompt": f"Reverse the letters of {w}.", "response": w[::-1], "family": "reverse"}
            for w in ("ab", "cd", "efg", "hij", "klm", "nop", "qrs", "tuv")]
    rows += [{"prompt": f"Which is largest: {a}, {b}?", "response": str(max(a, b)),
              "choices": [str(a), str(b)], "answer": int(b > a), "family": "mc"}
             for a, b in ((1, 2), (5, 3), (7, 9), (4, 8), (6, 2), (3, 1), (8, 5), (2, 9))]
    (root / "evalsets/data").mkdir(parents=True)
    (root / "evalsets/data/train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    save_tiny_model(root / "teacher", seed=1, n_layer=1, n_embd=32, n_head=2)
    return root


def test_labelled_rows_are_the_baselines_and_the_rest_carry_the_teachers_answers(root, monkeypatch):
    monkeypatch.setitem(presets.DEMO_STUDENT, "train_examples", 4)
    path = presets.demo_student_data(root, root / "teacher", root / "cache", seed=2, answered=6,
                                     progress=False)
    rows, out = read_pairs(root / "evalsets/data/train.jsonl"), read_pairs(path)
    labelled = read_pairs(presets.demo_baseline_data(root, root / "cache", seed=2))
    assert len(labelled) == 4 and out[:4] == labelled  # the baseline's rows, gold answers kept
    assert all(r in rows for r in labelled)
    answered = out[4:]
    assert len(answered) == 6 and all(r["source"] == "teacher" for r in answered)
    prompts = [r["prompt"] for r in out]
    assert len(set(prompts)) == 10  # no prompt twice
    assert {r["family"] for r in answered} == {"reverse", "mc"}  # family-balanced
    for row in answered:
        if row["family"] == "mc":  # one of the row's own choices, and `answer` points at it
            assert row["response"] == row["choices"][row["answer"]]
    # written once: a second call reuses the file, another seed draws other rows
    assert presets.demo_student_data(root, root / "teacher", root / "cache", seed=2, answered=6,
                                     progress=False) == path
    other = presets.demo_student_data(root, root / "teacher", root / "cache", seed=3, answered=6,
                                      progress=False)
    assert other != path
    assert read_pairs(other)[:4] == read_pairs(presets.demo_baseline_data(root, root / "cache", seed=3))


def test_a_changed_training_split_is_answered_afresh(root, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setitem(presets.DEMO_STUDENT, "train_examples", 4)
    shutil.copytree(root / "evalsets", tmp_path / "evalsets")
    first = presets.demo_student_data(tmp_path, root / "teacher", tmp_path / "cache", seed=2,
                                      answered=2, progress=False)
    train = tmp_path / "evalsets/data/train.jsonl"
    rows = read_pairs(train)
    rows = [{**r, "prompt": r["prompt"].replace("Reverse", "Invert")} for r in rows]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    second = presets.demo_student_data(tmp_path, root / "teacher", tmp_path / "cache", seed=2,
                                       answered=2, progress=False)
    assert second != first  # a file answered on the old split is never reused
    assert {r["prompt"] for r in read_pairs(second)} <= {r["prompt"] for r in rows}


def test_the_likeliest_choice_follows_the_model(root):
    import torch

    from kdroute.distill.modeling import load_model, load_tokenizer

    model, tokenizer = load_model(str(root / "teacher")), load_tokenizer(str(root / "teacher"))
    choices = ["12", "98"]
    pick = presets._likeliest_choice(model, tokenizer, "Which is largest: 12, 98?", choices)
    # the same sums computed one choice at a time
    from kdroute.distill.data import encode_pairs
    sums = []
    for choice in choices:
        (e,) = encode_pairs(tokenizer, [{"prompt": "Which is largest: 12, 98?", "response": choice}],
                            10**4)
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([e.input_ids])).logits[0, :-1], -1)
        sums.append(sum(float(logp[t - 1, e.input_ids[t]]) for t in range(1, len(e.input_ids))
                        if e.labels[t] != -100))
    assert pick == max(range(2), key=sums.__getitem__)


def test_the_baseline_job_reads_the_gold_file_and_the_distilled_one_the_answered_file(root,
                                                                                     monkeypatch):
    monkeypatch.setitem(presets.DEMO_STUDENT, "train_examples", 4)
    kd = presets.demo_student_job(root, root / "teacher", root / "kd", cache_dir=root / "cache",
                                  answered=6)
    ce = presets.demo_student_job(root, root / "teacher", root / "ce", distill=False,
                                  cache_dir=root / "cache", answered=6)
    assert ce.train_examples is None and read_pairs(ce.data) == read_pairs(kd.data)[:4]
    assert ce.teacher is None and ce.alpha_kd == 0
    assert len(read_pairs(kd.data)) == 10 and kd.train_examples is None and kd.alpha_kd > 0


def test_the_students_rows_favour_each_familys_easy_levels(tmp_path, monkeypatch):
    """A team's own rows are mostly easy: the hardest level is DEMO_HARDEST_SHARE of the
    easiest, whatever the split's own mix of levels (here the hard level is the common one)."""
    from collections import Counter

    rows = [{"prompt": f"Reverse the letters of {'x' * level}{i}.", "response": "y",
             "family": family, "difficulty": level}
            for family in ("reverse", "sort") for level, n in ((2, 300), (5, 300), (9, 900))
            for i in range(n)]
    (tmp_path / "evalsets/data").mkdir(parents=True)
    (tmp_path / "evalsets/data/train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setitem(presets.DEMO_STUDENT, "train_examples", 200)
    monkeypatch.setattr(presets, "DEMO_HARDEST_SHARE", 1 / 9)
    labelled, extra = presets.demo_labelled_data(tmp_path, seed=0, answered=400)
    for family in ("reverse", "sort"):
        levels = Counter(r["difficulty"] for r in labelled + extra if r["family"] == family)
        assert sum(levels.values()) == 300  # family-balanced
        # shares 1 : 1/3 : 1/9 of the family's 300 rows: about 208, 69, 23 (a draw without
        # replacement flattens it a little); the split itself holds them 1 : 1 : 3
        assert 150 < levels[2] < 240 and 45 < levels[5] < 100 and 8 < levels[9] < 45
    more, _ = presets.demo_labelled_data(tmp_path, seed=0, answered=0)
    assert more == labelled  # the labelled rows do not depend on how many are answered


def test_level_weights_share_each_family_geometrically():
    rows = ([{"family": "a", "difficulty": d} for d in (1, 1, 1, 1, 2, 3, 3)]
            + [{"family": "b", "difficulty": 7}, {"family": "b"}, {"prompt": "no family"}])
    weights = presets.level_weights(rows, hardest_share=0.25)
    per_level = {}
    for row, w in zip(rows, weights, strict=True):
        key = (row.get("family"), row.get("difficulty"))
        per_level[key] = per_level.get(key, 0) + w
    # a's levels 1, 2, 3 carry 1, 0.5, 0.25 however many rows each has
    assert per_level[("a", 1)] == pytest.approx(1)
    assert per_level[("a", 2)] == pytest.approx(0.5) and per_level[("a", 3)] == pytest.approx(0.25)
    assert weights[-3:] == [1.0, 1.0, 1.0]  # a single level, or no difficulty: unweighted
