"""Evaluation the way traffic arrives: grouped folds (whole groups held out) and cross-dataset."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from typer.testing import CliRunner

from kdroute.cli import app
from kdroute.errors import InputError
from kdroute.route.base import Scorer
from kdroute.route.registry import SCORER_CLS
from kdroute.route.train import group_folds_of

runner = CliRunner()


class Spy(Scorer):
    """Scores by prompt length, and remembers what every instance was fitted on and scored."""

    name = "spy"
    needs_training = True
    fits: list[tuple[list[str], list[str]]] = []  # (texts, groups) per fit
    scored: list[list[str]] = []

    def fit(self, texts, labels, groups=None, weights=None):
        Spy.fits.append((list(texts), list(groups)))
        return self

    def score_texts(self, texts):
        Spy.scored.append(list(texts))
        return np.array([len(t) / 1000 for t in texts])


@pytest.fixture
def spy(monkeypatch):
    Spy.fits, Spy.scored = [], []
    monkeypatch.setitem(SCORER_CLS, "spy", Spy)
    return Spy


def write_subject(path, subject: str, n: int, seed: int, extra: str | None = None):
    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["prompt", "small", "big", *([extra] if extra else [])])
        for i in range(n):
            hard = rng.random() < 0.4
            prompt = f"{subject} question {i}: " + ("why is it so, step by step? " * 3 if hard
                                                    else "name it.")
            row = [prompt, bool(rng.random() < (0.3 if hard else 0.9)), bool(rng.random() < 0.9)]
            w.writerow(row + ([f"family-{i % 3}"] if extra else []))
    return path


@pytest.mark.parametrize("seed", range(5))
def test_grouped_folds_never_split_a_group_and_stay_balanced(seed):
    rng = np.random.default_rng(seed)
    groups = [f"g{int(g)}" for g in rng.integers(0, 17, 900)]
    fold = group_folds_of(groups, 5, seed)
    for g in set(groups):
        assert len({int(f) for f, h in zip(fold, groups, strict=True) if h == g}) == 1
    sizes = np.bincount(fold, minlength=5)
    assert sizes.min() > 0 and sizes.max() - sizes.min() <= max(np.bincount(
        np.unique(groups, return_inverse=True)[1]))
    assert np.array_equal(fold, group_folds_of(groups, 5, seed))
    with pytest.raises(InputError, match="at least 5 groups"):
        group_folds_of(["a", "b", "a"], 5, seed)


def test_grouped_eval_holds_whole_files_out(tmp_path, spy):
    folder = tmp_path / "mmlu"
    folder.mkdir()
    for j, subject in enumerate(["algebra", "law", "biology", "history", "physics", "ethics"]):
        write_subject(folder / f"mmlu_{subject}.csv", subject, 30 + 7 * j, j)
    res = runner.invoke(app, ["route", "eval", "--data", str(folder), "--scorers", "spy,length",
                              "--group-by", "file", "--folds", "3", "--bootstrap", "0"],
                        env={"KDROUTE_STORE_PATH": str(tmp_path / "l.db")})
    assert res.exit_code == 0, res.output
    assert "whole groups held out" in res.output
    assert len(spy.fits) == 3 and len(spy.scored) == 3
    for (texts, groups), scored in zip(spy.fits, spy.scored, strict=True):
        held_subjects = {t.split(" question")[0] for t in scored}
        seen_subjects = {g.removeprefix("mmlu_") for g in groups}
        assert held_subjects and not held_subjects & seen_subjects
        assert not set(texts) & set(scored)
    assert sum(len(s) for s in spy.scored) == 30 * 6 + 7 * 15  # every prompt held out once


def test_group_by_a_column_of_the_files(tmp_path, spy):
    path = write_subject(tmp_path / "mixed.csv", "mixed", 90, 1, extra="family")
    res = runner.invoke(app, ["route", "eval", "--data", str(path), "--scorers", "spy",
                              "--group-by", "family", "--folds", "3", "--bootstrap", "0"],
                        env={"KDROUTE_STORE_PATH": str(tmp_path / "l.db")})
    assert res.exit_code == 0, res.output  # the group column is not taken for a score column
    for (_, groups), scored in zip(spy.fits, spy.scored, strict=True):
        held = {f"family-{int(t.split('question ')[1].split(':')[0]) % 3}" for t in scored}
        assert len(set(groups)) == 2 and not held & set(groups)


def test_cross_dataset_eval_trains_on_no_test_row(tmp_path, spy):
    train = write_subject(tmp_path / "gsm.csv", "math", 60, 2)
    test = write_subject(tmp_path / "mmlu.csv", "law", 50, 3)
    res = runner.invoke(app, ["route", "eval", "--train-data", str(train), "--test-data",
                              str(test), "--scorers", "spy,length", "--bootstrap", "0"],
                        env={"KDROUTE_STORE_PATH": str(tmp_path / "l.db")})
    assert res.exit_code == 0, res.output
    assert "trained on 60 other prompts" in res.output
    (texts, _), = spy.fits
    test_prompts = [r["prompt"] for r in csv.DictReader(test.open())]
    assert len(texts) == 60 and not set(texts) & set(test_prompts)
    assert spy.scored == [test_prompts]


@pytest.mark.parametrize("args, message", [
    (["--group-by", "subject"], "--group-by 'subject': no such column"),
    (["--train-data", "X"], "takes --train-data and --test-data"),
])
def test_bad_columns_and_splits_are_one_line_errors(tmp_path, args, message):
    path = write_subject(tmp_path / "a.csv", "a", 30, 4)
    args = [a if a != "X" else str(path) for a in args]
    data = [] if "--train-data" in args else ["--data", str(path)]
    res = runner.invoke(app, ["route", "eval", *data, "--scorers", "length", *args],
                        env={"KDROUTE_STORE_PATH": str(tmp_path / "l.db")})
    assert res.exit_code != 0 and isinstance(res.exception, InputError)
    assert message in str(res.exception) and "\n" not in str(res.exception)


def test_ledger_group_by_names_its_columns(tmp_store):
    from kdroute.route.train import ledger_data

    with pytest.raises(InputError, match="grouped by one of task, family, difficulty"):
        ledger_data(tmp_store, group_by="subject")
