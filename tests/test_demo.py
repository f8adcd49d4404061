"""`kdroute demo` end to end on a reduced replay: the committed demo teacher, a student that is a
copy of it (so the student's answers agree with the teacher's by construction and nothing here
depends on the demo pair's numbers), a few bench items, the gateway as real subprocesses.

One `--drift` run is shared by the tests: its printed figures are recomputed from the ledgers it
wrote, and its alert, breaker and probes are read back from the ledger.
"""

import json
import os
import shutil
import sqlite3
import subprocess
import sys

import pytest

from kdroute.demo.report import pct, usd
from kdroute.monitor.stats import weighted_rate
from tests.conftest import REPO

REQUESTS = 120  # the degraded third of --drift gets ~20 student answers: enough to alert


def _config(tmp, student, tasks=None):
    teacher = REPO / "models" / "demo-teacher"
    (tmp / "evalsets").symlink_to(REPO / "evalsets")
    bench = f"tasks = {json.dumps(tasks)}\n" if tasks else ""
    (tmp / "config.toml").write_text(
        f'[teacher]\nmodel = "hf:{teacher}"\ninput_price_per_1m = 5.0\noutput_price_per_1m = 15.0\n'
        f'[student]\nmodel = "hf:{student}"\ninput_price_per_1m = 0.1\noutput_price_per_1m = 0.3\n'
        # a copy of the committed student (a copy of the teacher would score the same on every
        # item, leaving route train nothing to learn); label the prompts the student gets wrong
        '[router]\nlabel_rule = "student_wrong"\n'
        f'[store]\npath = "ledger.db"\n[bench]\nspeed_prompts = 2\nspeed_new_tokens = 4\n{bench}')
    return tmp / "config.toml"


def _demo(tmp, *args, timeout=900):
    return subprocess.run(
        [sys.executable, "-m", "kdroute", "--config", str(tmp / "config.toml"), "demo", *args],
        cwd=tmp, capture_output=True, text=True, timeout=timeout,
        env=dict(os.environ, COLUMNS="400"))  # no wrapped lines in what the tests search


@pytest.fixture(scope="module")
def drift_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    shutil.copytree(REPO / "models" / "demo-student", tmp / "student")
    _config(tmp, tmp / "student")
    proc = _demo(tmp, "--drift", "--requests", str(REQUESTS), "--bench-limit", "10",
                 timeout=1800)  # ~3-5 min on an idle 2-core machine; far more when starved
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    outcome = json.loads((tmp / "runs" / "demo" / "outcome.json").read_text())
    return tmp, proc.stdout, outcome


def _gold():
    rows = [json.loads(line) for line in (REPO / "evalsets/data/validation.jsonl").open()]
    return {r["prompt"]: r for r in rows}


def _rows(db, sql, params=()):
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


@pytest.mark.timeout(1900)
def test_the_printed_figures_are_the_ledgers(drift_run):
    tmp, out, o = drift_run
    gold = _gold()
    ledger = tmp / "runs" / "demo" / "kdroute.db"
    assert o["ledger"] == str(ledger) and f"dashboard --db {ledger}" in out
    routed = _rows(ledger, "SELECT * FROM requests WHERE ts >= ? AND ts < ?",
                   [o["since"], o["until"]])
    assert len(routed) == REQUESTS == o["requests"]
    assert {r["requested_model"] for r in routed} == {"kdroute/auto"}
    assert {r["status"] for r in routed} == {200}

    def right(r):
        return r["response_text"].strip() == gold[r["prompt_text"].removeprefix("user: ")][
            "response"].strip()

    # quality against the gold answers, from the texts the ledger kept
    accuracy = sum(map(right, routed)) / len(routed)
    assert o["accuracy"]["routed"] == pytest.approx(accuracy)
    for role in ("teacher", "student"):
        base = _rows(tmp / "runs" / "demo" / "baselines.db",
                     "SELECT * FROM requests WHERE requested_model = ?", [f"kdroute/{role}"])
        assert len(base) == REQUESTS and {r["served_role"] for r in base} == {role}
        assert o["accuracy"][f"always_{role}"] == pytest.approx(sum(map(right, base)) / len(base))
    assert f"{pct(accuracy)}" in out and pct(o["accuracy"]["always_teacher"]) in out
    # who answered, and the teacher share per family and level
    share = sum(r["served_role"] == "teacher" for r in routed) / len(routed)
    assert o["teacher_share"] == pytest.approx(share)
    counted = {(a["role"], a["reason"]): a["requests"] for a in o["answered_by"]}
    for key in counted:
        assert counted[key] == sum((r["served_role"], r["route_reason"]) == key for r in routed)
    for family, levels in o["teacher_share_by_level"].items():
        for level, cell in levels.items():
            mine = [r for r in routed if (lambda g: (g["family"], str(g["difficulty"])))(
                gold[r["prompt_text"].removeprefix("user: ")]) == (family, str(level))]
            assert cell["requests"] == len(mine)
            assert cell["teacher_share"] == pytest.approx(
                sum(r["served_role"] == "teacher" for r in mine) / len(mine))
    # savings, gross and net of the shadow and probe calls
    evals = _rows(ledger, "SELECT * FROM shadow_evals WHERE ts >= ? AND ts < ?",
                  [o["since"], o["until"]])
    gross = sum(r["teacher_cost_usd"] - r["cost_usd"] for r in routed)
    monitor = sum((e["teacher_cost_usd"] or 0) + (e["student_cost_usd"] or 0)
                  + (e["judge_cost_usd"] or 0) for e in evals)
    s = o["savings"]
    assert s["gross_usd"] == pytest.approx(gross) and s["net_usd"] == pytest.approx(gross - monitor)
    assert monitor > 0 and usd(s["gross_usd"]) in out and usd(s["net_usd"]) in out
    # agreement of the shadow pairs with its interval
    shadows = [e for e in evals if e["kind"] == "shadow" and e["status"] == "ok"
               and e["verdict"] is not None]
    rate = weighted_rate([e["verdict"] for e in shadows], [e["inclusion_prob"] for e in shadows])
    assert o["agreement"]["n"] == len(shadows) > 0
    assert o["agreement"]["value"] == pytest.approx(rate.value)
    assert f"{rate.value:.1%} [{rate.lower:.1%}, {rate.upper:.1%}]" in out


def test_drift_opens_the_alert_and_the_breaker_takes_the_students_traffic(drift_run):
    tmp, out, o = drift_run
    ledger = tmp / "runs" / "demo" / "kdroute.db"
    first, degraded, back = o["phases"]
    assert degraded["label"] == "degraded student" and "degraded-student" in degraded["student"]
    # the good student agrees with the teacher more often than the degraded copy does
    assert first["student_agreement"]["value"] > degraded["student_agreement"]["value"]
    assert first["teacher_by_breaker"] == 0 and first["student_served"] > 0
    alerts = _rows(ledger, "SELECT * FROM alerts WHERE kind = 'quality' AND opened_at >= ?",
                   [o["since"]])
    assert alerts, out[-3000:]
    opened = min(a["opened_at"] for a in alerts)
    routed = _rows(ledger, "SELECT * FROM requests WHERE ts >= ? AND ts < ? ORDER BY ts",
                   [o["since"], o["until"]])
    swap = sorted(r["ts"] for r in routed)[degraded["first"]]
    assert opened > swap  # opened by the degraded student's answers, not before
    breaker = [r for r in routed if r["route_reason"] == "breaker"]
    assert breaker and all(r["ts"] > opened and r["served_role"] == "teacher" for r in breaker)
    assert degraded["teacher_by_breaker"] + back["teacher_by_breaker"] == len(breaker)
    # while the breaker holds, the student is probed in the background
    probes = _rows(ledger, "SELECT * FROM shadow_evals WHERE kind = 'probe' AND ts >= ?",
                   [o["since"]])
    assert probes and {p["request_id"] for p in probes} <= {r["id"] for r in breaker}
    assert "the drift, phase by phase" in out and "quality" in out
    # the quality alerts open after the swap, the first while the degraded student serves (a
    # slice's alert may open a few requests after the swap back: its evaluations lag)
    mine = [a for a in o["alerts"] if a["kind"] == "quality"]
    assert mine and all(a["opened_at_request"] >= degraded["first"] for a in mine)
    assert min(a["opened_at_request"] for a in mine) < back["first"]
    # once the good student is back its probes agree again, above the floor. (Resolving needs the
    # Wilson lower bound over the window, a tenth of the replay, back at the floor: with 12 answers
    # that takes 12 of 12. The full replay, benchmarks/bench_demo.py, shows every alert resolve.)
    assert back["student_agreement"]["value"] >= o["agreement_floor"]
    assert back["student_agreement"]["value"] > degraded["student_agreement"]["value"] + 0.3


def test_a_rerun_reuses_the_bench_run_the_router_and_the_baselines(drift_run):
    tmp, _, first = drift_run
    proc = _demo(tmp, "--requests", "20", "--bench-limit", "10", "--shadow-rate", "1")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert f"reusing bench run {first['bench_run']}" in proc.stdout
    assert "reusing" in proc.stdout and "trained on bench run" in proc.stdout
    assert "baselines: reusing" in proc.stdout
    runs = _rows(tmp / "runs" / "demo" / "kdroute.db", "SELECT kind FROM runs")
    assert [r["kind"] for r in runs].count("bench") == 1


def test_a_failing_stage_stops_the_demo_with_its_one_line_error(tmp_path):
    (tmp_path / "student").symlink_to(REPO / "models" / "demo-teacher")
    _config(tmp_path, tmp_path / "student", tasks=["kdroute_no_such_task"])
    proc = _demo(tmp_path, "--requests", "5", "--bench-limit", "2", timeout=600)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "stage 2/5 (`kdroute bench`) failed" in lines[0], proc.stderr
    assert "kdroute_no_such_task" in lines[0]
    assert "serve the gateway" not in proc.stdout  # nothing after the failed stage ran


# --- the pieces, without subprocesses ------------------------------------------------------------

def test_outcome_counts_only_this_replays_rows_and_weights_agreement_by_inclusion(tmp_path):
    from kdroute.demo.outcome import Phase, outcome
    from kdroute.demo.traffic import Prompt, Reply
    from kdroute.store import Store

    prompts = [Prompt(i, f"p{i}", "a", "arith" if i < 2 else "sort", 1 + i % 2) for i in range(4)]
    replies = [Reply(i, f"r{i}", "m", "router", "a" if i != 1 else "b", i != 1) for i in range(4)]
    roles = ["teacher", "student", "student", "teacher"]
    with Store(tmp_path / "l.db") as store:
        store.insert_requests(
            [{"id": "old", "ts": "2026-01-01T00:00:00", "served_role": "student", "status": 200,
              "cost_usd": 1.0, "teacher_cost_usd": 9.0}]  # an earlier replay: not counted
            + [{"id": f"r{i}", "ts": f"2026-01-02T00:00:0{i}", "served_role": roles[i],
                "route_reason": "router", "status": 200, "cost_usd": 1.0 if roles[i] ==
                "teacher" else 0.1, "teacher_cost_usd": 1.0} for i in range(4)])
        store.insert_shadows([
            {"request_id": "r1", "kind": "shadow", "status": "ok", "verdict": 0,
             "inclusion_prob": 0.25, "teacher_cost_usd": 0.05, "ts": "2026-01-02T00:00:05"},
            {"request_id": "r2", "kind": "shadow", "status": "ok", "verdict": 1,
             "inclusion_prob": 1.0, "teacher_cost_usd": 0.05, "ts": "2026-01-02T00:00:06"},
            {"request_id": "r2", "kind": "shadow", "status": "failed", "verdict": None,
             "inclusion_prob": 1.0, "ts": "2026-01-02T00:00:06"}])
        store.open_alert({"kind": "quality", "slice": "all", "opened_at": "2026-01-02T00:00:02",
                          "message": "m"})
        baselines = {"teacher": replies, "student": [Reply(i, "", "", "", "x", False)
                                                     for i in range(4)]}
        o = outcome(store, prompts, replies, baselines, "2026-01-02", "2026-01-03",
                    phases=[Phase(0, "student", "hf:s"), Phase(2, "worse", "hf:w")])
    assert o["requests"] == 4 and o["teacher_share"] == 0.5
    assert o["accuracy"] == {"routed": 0.75, "always_teacher": 0.75, "always_student": 0.0}
    assert o["teacher_share_by_level"]["arith"] == {1: {"requests": 1, "teacher_share": 1.0},
                                                    2: {"requests": 1, "teacher_share": 0.0}}
    assert o["savings"]["gross_usd"] == pytest.approx(4.0 - 2.2)
    assert o["savings"]["net_usd"] == pytest.approx(4.0 - 2.2 - 0.1)
    # weights 1/π: the disagreement sampled at 0.25 stands for 4 requests, the agreement for 1
    assert o["agreement"]["n"] == 2 and o["agreement"]["value"] == pytest.approx(1 / 5)
    assert [(a["kind"], a["opened_at_request"]) for a in o["alerts"]] == [("quality", 2)]
    assert [(p["requests"], p["student_served"]) for p in o["phases"]] == [(2, 1), (2, 1)]


def test_held_out_prompts_mix_families_and_leave_out_multiple_choice():
    from kdroute.demo.traffic import held_out_prompts

    prompts = held_out_prompts(REPO, 500)
    assert len(prompts) == 500 and [p.index for p in prompts] == list(range(500))
    assert "mc" not in {p.family for p in prompts}
    assert len({p.family for p in prompts[:50]}) == 5  # any prefix is mixed
    assert len({(p.family, p.difficulty) for p in prompts}) > 20
    assert held_out_prompts(REPO, 30, seed=1) != held_out_prompts(REPO, 30, seed=0)
    with pytest.raises(Exception, match="validation split has 500"):
        held_out_prompts(REPO, 501)


def test_the_degraded_student_is_deterministic_and_differs_from_the_student(tmp_path):
    from safetensors.torch import load_file

    from kdroute.demo.drift import degraded_copy
    from kdroute.fingerprint import model_fingerprint

    shutil.copytree(REPO / "models" / "demo-student", tmp_path / "student")  # whichever it is
    a = degraded_copy(tmp_path / "student", tmp_path / "a")
    b = degraded_copy(tmp_path / "student", tmp_path / "b")
    assert model_fingerprint(a) == model_fingerprint(b) != model_fingerprint(tmp_path / "student")
    good, bad = (load_file(p / "model.safetensors") for p in (tmp_path / "student", a))
    assert good.keys() == bad.keys()
    changed = [k for k in good if not good[k].equal(bad[k])]
    assert changed and all(good[k].dim() >= 2 for k in changed)  # matrices only
