"""Training routers from the ledger and from RouteLLM-format files, calibration, bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from kdroute.cli import app
from kdroute.config import load_config
from kdroute.errors import InputError
from kdroute.route import load_router
from kdroute.route.artifact import load_artifact, save_artifact
from kdroute.route.data import read_recorded
from kdroute.route.train import calibrate, ledger_data, train_router

runner = CliRunner()


def synthetic_pairs(n: int = 240, seed: int = 0):
    """Prompts where 'multi-step' word problems with many numbers defeat the student."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        hard = rng.random() < 0.4
        if hard:
            nums = rng.integers(10, 999, 5)
            prompt = (f"A shop has {nums[0]} boxes of {nums[1]} pens. It sells {nums[2]} pens "
                      f"each day for {nums[3]} days, then buys {nums[4]} more. How many remain?")
        else:
            prompt = f"What is the capital of country number {i}? Answer in one word."
        student_ok = rng.random() < (0.2 if hard else 0.9)
        teacher_ok = rng.random() < 0.9
        rows.append((prompt, float(student_ok), float(teacher_ok), hard))
    return rows


def write_csv(path, rows, teacher="big-model", student="small-model"):
    import csv

    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["prompt", student, teacher, f"{teacher}_response"])
        for prompt, s, t, _ in rows:
            w.writerow([prompt, bool(s), bool(t), "the answer is 42"])
    return path


def bench_into_ledger(store, rows):
    run = store.start_run("bench")
    samples = []
    for doc_id, (prompt, s, t, _) in enumerate(rows):
        for role, score in (("teacher", t), ("student", s)):
            samples.append({"model_fingerprint": f"fp-{role}", "role": role, "task": "skills",
                            "doc_id": doc_id, "prompt": prompt, "target": "x",
                            "response": "y", "score": score})
    store.save_bench(run, [], samples)
    store.finish_run(run)
    return run


def test_train_from_ledger_bench_samples(tmp_store, tmp_path):
    rows = synthetic_pairs()
    run = bench_into_ledger(tmp_store, rows)
    data = ledger_data(tmp_store, runs=[run])
    assert len(data) == len(rows) and data.teacher == "fp-teacher"
    settings = load_config(None, env={})
    artifact = train_router(data, "tfidf", settings, folds=3, holdout=0.25)
    assert artifact.metrics["cv"]["apgr"] > 0.6  # the hard prompts are learnable
    assert artifact.metrics["cv"]["auc"] > 0.7
    assert artifact.teacher == "fp-teacher" and artifact.label_rule == settings.router.label_rule
    cal = artifact.calibration
    assert cal["target"] == "teacher_share"
    assert abs(cal["teacher_calls"] - 0.3 * cal["n"]) <= 1  # within one item
    path = save_artifact(artifact, tmp_path / "r.json")
    router = load_router(load_config(None, env={"KDROUTE_ROUTER_ARTIFACT": str(path)}))
    hard = [p for p, *_ in rows if "pens" in p]
    easy = [p for p, *_ in rows if "capital" in p]
    assert np.mean(router.score(hard)) > np.mean(router.score(easy))


def test_import_then_train_then_score_through_the_cli(tmp_path):
    rows = synthetic_pairs(seed=1)
    csv_path = write_csv(tmp_path / "recorded.csv", rows)
    env = {"KDROUTE_STORE_PATH": str(tmp_path / "ledger.db")}
    res = runner.invoke(app, ["route", "import", str(csv_path)], env=env)
    assert res.exit_code == 0, res.output
    assert "teacher big-model" in res.output
    out = tmp_path / "router.json"
    res = runner.invoke(app, ["route", "train", "--scorer", "tfidf", "--folds", "3", "-o",
                              str(out), "--target", "quality_floor", "--value", "0.95"], env=env)
    assert res.exit_code == 0, res.output
    meta = json.loads(out.read_text())
    assert meta["teacher"] == "big-model" and meta["student"] == "small-model"
    assert meta["calibration"]["quality_vs_teacher"] >= 0.95
    assert meta["metrics"]["cv"]["apgr"] > 0.6
    # score: one row per input row, in order, CSV and JSONL (with a conversation)
    inp = tmp_path / "traffic.jsonl"
    lines = [{"prompt": rows[0][0], "id": 1},
             {"messages": [{"role": "user", "content": rows[1][0]}], "id": 2},
             {"prompt": rows[0][0], "id": 3}]
    inp.write_text("".join(json.dumps(x) + "\n" for x in lines))
    res = runner.invoke(app, ["route", "score", "--router", str(out), "--input", str(inp),
                              "--output", str(tmp_path / "scored.jsonl")], env=env)
    assert res.exit_code == 0, res.output
    scored = [json.loads(x) for x in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert [r["id"] for r in scored] == [1, 2, 3]
    assert scored[0]["score"] == scored[2]["score"] and 0 <= scored[1]["score"] <= 1
    res = runner.invoke(app, ["route", "score", "--router", str(out), "--input", str(csv_path),
                              "--output", str(tmp_path / "scored.csv")], env=env)
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "scored.csv").read_text().splitlines()) == len(rows) + 1


def test_calibration_meets_each_target_on_held_out_data():
    rng = np.random.default_rng(5)
    n = 200
    qs = (rng.random(n) < 0.6).astype(float)
    qt = np.maximum(qs, rng.random(n) < 0.8)
    scores = ((qt - qs) * 0.5 + rng.random(n)) / 1.5  # informative, in [0, 1], no ties
    held = slice(100, None)
    for share in (0.0, 0.1, 0.37, 1.0):
        cal = calibrate(scores[held], qs[held], qt[held], "teacher_share", share)
        realized = int((scores[held] >= cal["threshold"]).sum())
        assert abs(realized - share * 100) <= 1 and realized == cal["teacher_calls"]
    cal = calibrate(scores[held], qs[held], qt[held], "quality_floor", 0.95)
    routed = np.where(scores[held] >= cal["threshold"], qt[held], qs[held]).mean()
    assert routed >= 0.95 * qt[held].mean()
    one_less = calibrate(scores[held], qs[held], qt[held], "teacher_share",
                         (cal["teacher_calls"] - 1) / 100)
    assert one_less["quality"] < 0.95 * qt[held].mean()  # the fewest calls that reach it
    # USD per request: student 0.0001, teacher 0.001 -> $0.1 to $1 per 1k; budget $0.5 per 1k
    cal = calibrate(scores[held], qs[held], qt[held], "cost_budget", 0.5, 1e-4, 1e-3)
    cost_1k = np.where(scores[held] >= cal["threshold"], 1e-3, 1e-4).mean() * 1000
    assert cost_1k == pytest.approx(cal["cost_per_1k"]) and cost_1k <= 0.5
    assert cost_1k + 0.9e-3 * 1000 / 100 > 0.5  # one more teacher call would break the budget
    assert cal["teacher_calls"] == 44


@pytest.mark.parametrize("content, message", [
    ("", "empty"),
    ("question,a,b\nhi,True,False\n", "missing column 'prompt'"),
    ("prompt,a\nhi,True\n", "expected two score columns"),
    ("prompt,a,b\nhi,maybe,True\n", "expected True/False"),
])
def test_bad_files_give_one_line_errors(tmp_path, content, message):
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    with pytest.raises(InputError) as err:
        read_recorded([bad])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cli_prints_bad_file_errors_in_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("question,a,b\nhi,True,False\n")
    proc = subprocess.run([sys.executable, "-m", "kdroute", "route", "import", str(bad)],
                          capture_output=True, text=True,
                          env={**os.environ, "KDROUTE_STORE_PATH": str(tmp_path / "l.db")})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "missing column 'prompt'" in proc.stderr


def test_no_positive_labels_is_a_one_line_error(tmp_path):
    rows = [(f"question {i}", 1.0, 1.0, False) for i in range(30)]
    path = write_csv(tmp_path / "all_right.csv", rows)
    res = runner.invoke(app, ["route", "train", "--data", str(path), "--folds", "3",
                              "-o", str(tmp_path / "r.json")],
                        env={"KDROUTE_STORE_PATH": str(tmp_path / "l.db")})
    assert res.exit_code != 0
    assert isinstance(res.exception, InputError)
    assert str(res.exception).startswith("no positive labels") and "\n" not in str(res.exception)


def test_bench_pairs_missing_in_ledger_is_an_input_error(tmp_store):
    with pytest.raises(InputError, match="no bench samples"):
        ledger_data(tmp_store)


def test_label_rule_option_overrides_config_and_is_recorded(tmp_path):
    csv_path = write_csv(tmp_path / "recorded.csv", synthetic_pairs(n=120, seed=5))
    env = {"KDROUTE_STORE_PATH": str(tmp_path / "l.db")}
    out = tmp_path / "binary.json"
    res = runner.invoke(app, ["route", "train", "--data", str(csv_path), "--folds", "3",
                              "--label-rule", "teacher_right_student_wrong", "-o", str(out)],
                        env=env)
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["label_rule"] == "teacher_right_student_wrong"
    res = runner.invoke(app, ["route", "train", "--data", str(csv_path), "--folds", "3",
                              "-o", str(tmp_path / "soft.json")], env=env)
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "soft.json").read_text())["label_rule"] == "expected_gain"
    res = runner.invoke(app, ["route", "eval", "--data", str(csv_path), "--scorers", "heuristic",
                              "--label-rule", "nonsense"], env=env)
    assert res.exit_code != 0 and isinstance(res.exception, InputError)
    assert str(res.exception).startswith("--label-rule nonsense:")
    assert "\n" not in str(res.exception)


def test_calibrate_to_a_cost_budget_through_the_cli(tmp_path):
    csv_path = write_csv(tmp_path / "recorded.csv", synthetic_pairs(n=120, seed=6))
    env = {"KDROUTE_STORE_PATH": str(tmp_path / "l.db")}
    out = tmp_path / "r.json"
    res = runner.invoke(app, ["route", "train", "--data", str(csv_path), "--folds", "3",
                              "-o", str(out)], env=env)
    assert res.exit_code == 0, res.output
    all_teacher = json.loads(out.read_text())["calibration"]["teacher_cost_per_1k"]
    budget = all_teacher / 2
    res = runner.invoke(app, ["route", "calibrate", "-r", str(out), "--data", str(csv_path),
                              "--target", "cost_budget", "--value", str(budget)], env=env)
    assert res.exit_code == 0, res.output
    cal = json.loads(out.read_text())["calibration"]
    assert cal["target"] == "cost_budget" and 0 < cal["cost_per_1k"] <= budget


def test_import_recorded_is_one_transaction(tmp_path):
    import sqlite3

    from kdroute.route.train import import_to_ledger
    from kdroute.store import Store

    data = read_recorded([write_csv(tmp_path / "r.csv", synthetic_pairs(20))])
    with Store(tmp_path / "l.db") as store:
        bad = [{"task": "t", "doc_id": 0, "score": 1.0, "no_such_column": 1}]
        with pytest.raises(sqlite3.OperationalError):
            store.import_recorded({"files": []}, [{"fingerprint": "m", "reference": "m",
                                                   "kind": "recorded"}], bad)
        for table in ("runs", "models", "bench_samples"):
            assert store.count(table) == 0, table
        run = import_to_ledger(store, data, ["r.csv"])
        assert store.run(run)["status"] == "done" and store.count("models") == 2
        assert store.count("bench_samples") == 2 * len(data)
        assert len(ledger_data(store)) == len(data)


def test_param_sets_a_scorer_hyperparameter_and_the_artifact_keeps_it(tmp_path):
    csv_path = write_csv(tmp_path / "recorded.csv", synthetic_pairs(n=160, seed=7))
    env = {"KDROUTE_STORE_PATH": str(tmp_path / "l.db")}
    base = ["route", "train", "--data", str(csv_path), "--folds", "3", "--scorer", "tfidf"]
    res = runner.invoke(app, [*base, "-o", str(tmp_path / "default.json")], env=env)
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*base, "-p", "c=0.001", "--param", "ngram_max=2",
                              "-o", str(tmp_path / "tuned.json")], env=env)
    assert res.exit_code == 0, res.output
    default, tuned = (load_artifact(tmp_path / f"{n}.json") for n in ("default", "tuned"))
    assert (tuned.scorer.c, tuned.scorer.ngram) == (0.001, (1, 2))
    assert (default.scorer.c, default.scorer.ngram) == (0.3, (1, 3))
    assert json.loads((tmp_path / "tuned.json").read_text())["metrics"]["params"] == {
        "c": 0.001, "ngram_max": 2}
    prompts = [r[0] for r in synthetic_pairs(n=20, seed=8)]
    # a far stronger penalty pulls every score toward the base rate
    assert np.ptp(tuned.scorer.score_texts(prompts)) < np.ptp(default.scorer.score_texts(prompts))


def test_param_reaches_a_keyword_passed_up_to_the_base_scorer():
    from kdroute.route.registry import parse_params

    assert parse_params("tfidf_length", ["min_df=1", "c=2"]) == {"min_df": 1, "c": 2}


@pytest.mark.parametrize("pair, message", [
    ("c", "write KEY=VALUE"),
    ("=3", "write KEY=VALUE"),
    ("cc=3", "tfidf has no parameter 'cc'; it takes c, n_features"),
    ("c=lots", "tfidf refuses"),
])
def test_bad_params_are_one_line_errors_before_any_data_is_read(tmp_path, pair, message):
    res = runner.invoke(app, ["route", "train", "--scorer", "tfidf", "--data",
                              str(tmp_path / "missing.csv"), "--param", pair,
                              "-o", str(tmp_path / "r.json")],
                        env={"KDROUTE_STORE_PATH": str(tmp_path / "l.db")})
    assert res.exit_code != 0 and isinstance(res.exception, InputError), res.output
    assert message in str(res.exception) and "\n" not in str(res.exception)
    assert not (tmp_path / "r.json").exists()
