"""The learning loop: shadow pairs from the ledger train the router (weighted by their inclusion
probability) and become the next distillation set."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from kdroute.cli import app
from kdroute.errors import InputError
from kdroute.route.learned import fit_logistic
from kdroute.route.train import learning_data, shadow_data
from kdroute.store import Store
from tests.test_route_train import bench_into_ledger, synthetic_pairs

runner = CliRunner()
STUDENT, TEACHER = "hf:models/demo-student", "hf:models/demo-teacher"


def shadow_rows(n: int = 60, seed: int = 0, student: str = STUDENT) -> list[dict]:
    """Hard word problems the teacher disagrees on; easy look-ups it agrees on. Pairs near the
    threshold were sampled more often (inclusion 0.5) than the rest (0.1)."""
    rows = []
    for i, (prompt, _, _, hard) in enumerate(synthetic_pairs(n, seed)):
        rows.append({"request_id": f"req-{seed}-{i}", "kind": "shadow", "status": "ok",
                     "verdict": 0 if hard else 1, "inclusion_prob": 0.5 if i % 3 == 0 else 0.1,
                     "prompt_text": prompt, "teacher_response": f"teacher answer {i}",
                     "student_response": f"student answer {i}", "teacher_model": TEACHER,
                     "student_model": student, "slice": "family:arith" if hard else "family:qa",
                     "agreement": float(not hard), "method": "exact"})
    return rows


@pytest.fixture
def ledger(tmp_path):
    path = tmp_path / "l.db"
    with Store(path) as store:
        bench_into_ledger(store, synthetic_pairs(80, seed=1))
        store.insert_shadows(shadow_rows(10, seed=9, student="hf:old-student"))  # older pairs
        store.insert_shadows(shadow_rows())
        store.insert_shadows([{"request_id": "no-text", "kind": "shadow", "status": "ok",
                               "verdict": 0, "inclusion_prob": 1.0, "student_model": STUDENT}])
    return path


def test_shadow_pairs_become_weighted_labels_of_one_student(ledger):
    with Store(ledger) as store:
        rows = store.shadow_pairs()
        shadow = shadow_data(store)
        data, sources = learning_data(store)
    assert len(rows) == 70  # the pair without a prompt is skipped
    assert len(shadow) == 60 and shadow.student == STUDENT  # the newest pair's student only
    raw = np.array([1 / r["inclusion_prob"] for r in shadow_rows()])
    np.testing.assert_allclose(shadow.weights, raw / raw.mean())
    hard = np.array([r["verdict"] == 0 for r in shadow_rows()])
    assert np.all(shadow.q_student[hard] == 0) and np.all(shadow.q_student[~hard] == 1)
    assert np.all(shadow.q_teacher == 1)
    assert sources == {"bench": 80, "shadow": 60, "shadow_teacher_needed": int(hard.sum()),
                       "student": STUDENT, "teacher": TEACHER}
    assert len(data) == 140 and np.all(data.weights[60:] == 1.0)


def test_a_weight_counts_like_repeated_rows():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3))
    y = (x[:, 0] + rng.normal(size=80) > 0).astype(float)
    w = rng.integers(1, 4, 80).astype(float)
    weighted = fit_logistic(x, y, 1.0, w)
    repeated = fit_logistic(np.repeat(x, w.astype(int), 0), np.repeat(y, w.astype(int)), 1.0)
    np.testing.assert_allclose(weighted[0], repeated[0], rtol=1e-3, atol=1e-4)
    assert not np.allclose(weighted[0], fit_logistic(x, y, 1.0)[0], atol=1e-3)


def test_route_train_from_ledger_records_what_it_used(ledger, tmp_path):
    out = tmp_path / "r.json"
    res = runner.invoke(app, ["route", "train", "--from-ledger", "--scorer", "tfidf",
                              "--folds", "3", "-o", str(out)],
                        env={"KDROUTE_STORE_PATH": str(ledger)})
    assert res.exit_code == 0, res.output
    meta = json.loads(out.read_text())
    assert meta["student"] == STUDENT and meta["teacher"] == TEACHER
    assert meta["metrics"]["sources"]["bench"] == 80 and meta["metrics"]["sources"]["shadow"] == 60
    assert "60 shadow pairs" in res.output


def test_distill_data_round_trips_through_the_distill_loader(ledger, tmp_path):
    from kdroute.distill.data import read_pairs

    out = tmp_path / "next.jsonl"
    res = runner.invoke(app, ["distill", "data", "--from-ledger", "-o", str(out)],
                        env={"KDROUTE_STORE_PATH": str(ledger)})
    assert res.exit_code == 0, res.output
    rows = read_pairs(out)
    expected = [r for r in shadow_rows(10, seed=9, student="hf:old-student") + shadow_rows()
                if r["verdict"] == 0]
    by_prompt = {r["prompt_text"]: r["teacher_response"] for r in expected}
    assert len(rows) == len(expected) and {r["prompt"]: r["response"] for r in rows} == by_prompt
    assert {r["family"] for r in rows} == {"arith"}
    res = runner.invoke(app, ["distill", "data", "--from-ledger", "--all", "--student", STUDENT,
                              "-o", str(out)], env={"KDROUTE_STORE_PATH": str(ledger)})
    assert res.exit_code == 0, res.output
    assert len(read_pairs(out)) == 60


@pytest.mark.parametrize("args, message", [
    (["distill", "data", "--from-ledger", "-o", "X"], "no shadow pairs with a prompt"),
    (["route", "train", "--from-ledger", "-o", "X"], "no bench samples and no shadow pairs"),
])
def test_an_empty_ledger_is_a_one_line_error(tmp_path, args, message):
    args = [str(tmp_path / "out.json") if a == "X" else a for a in args]
    res = runner.invoke(app, args, env={"KDROUTE_STORE_PATH": str(tmp_path / "empty.db")})
    assert res.exit_code != 0 and isinstance(res.exception, InputError)
    assert message in str(res.exception) and "\n" not in str(res.exception)
