"""`train_examples`: a family-balanced subset of the training rows, drawn by seed, the same for
the distilled student and its cross-entropy baseline, and read from a teacher cache of all rows."""

import json
from collections import Counter

import pytest

from kdroute.distill.data import stratified_subset
from kdroute.distill.job import DistillJob
from kdroute.distill.train import train
from kdroute.errors import InputError
from kdroute.tinymodels import save_tiny_model

ROWS = [{"prompt": f"p{i}", "response": "r", "family": fam}
        for fam, n in (("a", 50), ("b", 50), ("c", 6)) for i in range(n)]


def test_subset_is_balanced_deterministic_and_drawn_by_seed():
    picked = stratified_subset(ROWS, 30, seed=0)
    assert len(picked) == len(set(picked)) == 30 and picked == sorted(picked)
    # c has only 6 rows: the 4 it cannot fill go to a and b
    assert Counter(ROWS[i]["family"] for i in picked) == {"a": 12, "b": 12, "c": 6}
    assert stratified_subset(ROWS, 30, seed=0) == picked
    assert stratified_subset(ROWS, 30, seed=1) != picked
    assert Counter(ROWS[i]["family"] for i in stratified_subset(ROWS, 31, seed=5)) == {
        "a": 13, "b": 12, "c": 6}
    assert stratified_subset(ROWS, None, seed=0) == stratified_subset(ROWS, 500, seed=0) == list(
        range(len(ROWS)))
    no_family = [{"prompt": "x", "response": "y"}] * 10
    assert len(stratified_subset(no_family, 4, seed=0)) == 4


def test_weights_draw_each_familys_rows_in_proportion_and_keep_the_subsets_nested():
    rows = [{"prompt": f"p{i}", "response": "r", "family": fam, "heavy": i % 4 == 0}
            for fam in ("a", "b") for i in range(400)]
    weights = [9.0 if r["heavy"] else 1.0 for r in rows]  # 100 heavy rows of 400 per family
    picked = stratified_subset(rows, 100, seed=0, weights=weights)
    assert Counter(rows[i]["family"] for i in picked) == {"a": 50, "b": 50}
    heavy = sum(rows[i]["heavy"] for i in picked)
    assert heavy > 60  # unweighted, about a quarter (25) would be heavy
    assert set(stratified_subset(rows, 40, seed=0, weights=weights)) <= set(picked)
    assert stratified_subset(rows, 100, seed=0, weights=weights) == picked
    assert stratified_subset(rows, 100, seed=1, weights=weights) != picked
    for bad in ([1.0] * 3, [0.0] * len(rows)):
        with pytest.raises(InputError, match="one weight > 0 per row"):
            stratified_subset(rows, 10, seed=0, weights=bad)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("subset")
    rows = [{"prompt": f"What is {a} + {b}?", "response": str(a + b), "family": f"f{a % 3}"}
            for a in range(8) for b in range(8)]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    save_tiny_model(root / "teacher", seed=1, n_layer=1, n_embd=32, n_head=2)
    return root


def job(toy, out, **kw) -> DistillJob:
    base = dict(data=toy / "train.jsonl", output_dir=toy / out, teacher=str(toy / "teacher"),
                student_layers=1, student_width=16, student_heads=2, steps=4, batch_size=8,
                lr=1e-2, warmup_steps=1, checkpoint_every=1000, eval_every=1000,
                cache_dir=toy / "cache", max_length=32, alpha_ce=0.5, alpha_kd=0.5, seed=3,
                train_examples=12)
    return DistillJob(**(base | kw))


def test_distilled_and_baseline_students_see_the_same_subset_and_the_cache_lines_up(toy):
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(toy / "teacher"))
    live = train(job(toy, "live"), progress=False)
    cached = train(job(toy, "cached", teacher_mode="cached", top_k=vocab), progress=False)
    ce = train(job(toy, "ce", teacher=None, alpha_kd=0.0), progress=False)
    whole = train(job(toy, "whole", teacher=None, alpha_kd=0.0, train_examples=None),
                  progress=False)
    # The cache holds all 64 rows; the subset run reads the right ones (fp16 is the only gap).
    assert [h["kd_loss"] for h in cached.history] == pytest.approx(
        [h["kd_loss"] for h in live.history], rel=2e-2)
    # Same first batch for KD and CE (same init, same rows), another one without the subset.
    assert ce.history[0]["ce_loss"] == pytest.approx(live.history[0]["ce_loss"], rel=1e-6)
    assert whole.history[0]["ce_loss"] != pytest.approx(ce.history[0]["ce_loss"], rel=1e-6)
    card = json.loads((toy / "ce" / "kdroute_card.json").read_text())
    assert card["data"]["train_examples"] == 12 and card["data"]["subset_seed"] == 3


def test_train_examples_below_one_is_refused(toy):
    with pytest.raises(InputError, match="train_examples must be >= 1"):
        job(toy, "bad", train_examples=0).check()
