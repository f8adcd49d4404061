"""`kdroute bench` end to end on two tiny random-init models: real lm-eval, real SQLite."""

import json
import sys
from pathlib import Path

import pytest
from conftest import REPO

from kdroute.cli import common, main
from kdroute.config import load_config
from kdroute.store import Store
from kdroute.tinymodels import save_tiny_model

LIMIT = 4
TASKS = ["kdroute_arith", "kdroute_reverse", "kdroute_sort", "kdroute_count", "kdroute_lookup",
         "kdroute_mc"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two tiny models and a config whose ledger and reports live in a temp folder."""
    root = tmp_path_factory.mktemp("bench")
    for name, seed in (("teacher", 0), ("student", 1)):
        save_tiny_model(root / name, seed=seed, n_layer=1, n_head=2, n_embd=32)
    config = root / "config.toml"
    config.write_text(
        '[teacher]\nmodel = "hf:teacher"\n[student]\nmodel = "hf:student"\n'
        '[store]\npath = "ledger.db"\n'
        f'[bench]\ninclude_path = "{REPO / "evalsets"}"\nlimit = {LIMIT}\noutput_dir = "runs"\n'
        'speed_prompts = 2\nspeed_new_tokens = 4\nbatch_size = 8\ndevice = "cpu"\n')
    return root, config


def kdroute(config, *args, monkeypatch, capsys):
    """Run the real console entry point in-process; return (exit code, stdout, stderr)."""
    monkeypatch.setattr(common.console, "width", 200)  # a wide terminal: no wrapped headers
    monkeypatch.setattr(sys, "argv", ["kdroute", "--config", str(config), *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def summary_of(store, run_id) -> dict:
    """The run's summary.json, found through the ledger's record of its report folder."""
    return json.loads((Path(store.run(run_id)["output_dir"]) / "summary.json").read_text())


def origins(summary) -> dict:
    """role -> (tasks lm-eval evaluated, tasks taken from the ledger's cache)."""
    return {role: (m["evaluated_tasks"], m["cached_tasks"])
            for role, m in summary["models"].items()}


def implied_verdicts(store, run_id, min_retention) -> dict:
    """task -> the verdict the run's recorded primary scores imply: PASS when the student keeps
    at least min_retention of the teacher's score, n/a when the teacher scores 0."""
    scores = store.frame("SELECT role, task, value FROM bench_results WHERE run_id = ? "
                         "AND metric IN ('exact_match,extract', 'acc,none')", [run_id])
    table = scores.pivot(index="task", columns="role", values="value")
    return {task: "n/a" if row.teacher <= 0 else
            "PASS" if row.student / row.teacher >= min_retention else "FAIL"
            for task, row in table.iterrows()}


def latest_run(store):
    return store.frame("SELECT * FROM runs ORDER BY started_at DESC LIMIT 1").iloc[0]


def test_bench_writes_results_samples_table_and_report(world, monkeypatch, capsys):
    root, config = world
    code, out, _ = kdroute(config, "bench", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, out
    for text in ("student vs teacher", "retention", "chance-corr.", "gen tokens/s",
                 "latency p95 ms", "speed-up", *TASKS):
        assert text in out
    with Store(root / "ledger.db") as store:
        run = latest_run(store)
        assert run["status"] == "done"
        assert origins(summary_of(store, run["id"])) == {"teacher": (TASKS, []),
                                                          "student": (TASKS, [])}
        verdicts = implied_verdicts(store, run["id"], load_config(config).bench.min_retention)
    assert set(verdicts) == set(TASKS)
    failing = [task for task, v in verdicts.items() if v == "FAIL"]
    gate_line = next(line for line in out.splitlines() if line.startswith(("PASS", "FAIL")))
    assert gate_line.startswith("FAIL" if failing else "PASS"), gate_line
    assert all(task in gate_line for task in failing)
    with Store(root / "ledger.db") as store:
        results = store.frame("SELECT * FROM bench_results WHERE run_id = ?", [run["id"]])
        scored = results[results.task != "speed"]
        assert set(scored.task) == set(TASKS) and set(scored.role) == {"teacher", "student"}
        assert (scored.n == LIMIT).all() and scored.lm_eval_version.notna().all()
        speed = results[results.task == "speed"]
        assert {"tokens_per_s", "latency_p50_ms", "params"} <= set(speed.metric)
        samples = store.frame("SELECT * FROM bench_samples WHERE run_id = ?", [run["id"]])
    assert len(samples) == 2 * LIMIT * len(TASKS)
    assert samples.family.notna().all() and samples.difficulty.notna().all()
    assert not samples.prompt.str.startswith("Q:").any()  # the user's words, not the wrapper
    pairs = samples.groupby(["task", "doc_id"]).role.apply(sorted)
    assert (pairs.apply(tuple) == ("student", "teacher")).all()
    mc = samples[samples.task == "kdroute_mc"]
    assert set(mc.score) <= {0.0, 1.0} and mc.target.str.fullmatch(r"\d+").all()
    report = root / "runs" / run["id"]
    assert (report / "report.md").read_text().count("| kdroute_") == len(TASKS)
    assert (report / "retention.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((report / "summary.json").read_text())
    assert summary["models"]["teacher"]["evaluated_tasks"] == TASKS
    assert {c["task"]: c["verdict"] for c in summary["comparisons"]} == verdicts
    assert not list((root / "runs").glob("*.partial"))


def test_second_run_reuses_the_cached_teacher_and_gates(world, monkeypatch, capsys):
    root, config = world
    code, out, _ = kdroute(config, "bench", "--gate", "--min-retention", "1.0",
                           monkeypatch=monkeypatch, capsys=capsys)
    with Store(root / "ledger.db") as store:
        first, second = store.frame(
            "SELECT id FROM runs WHERE status = 'done' ORDER BY started_at").id.tolist()[-2:]
        # the teacher came from the ledger; only the student was evaluated
        assert origins(summary_of(store, second)) == {"teacher": ([], TASKS),
                                                       "student": (TASKS, [])}
        frame = store.frame("SELECT run_id, role, task, doc_id, response, score, cache_key "
                            "FROM bench_samples WHERE role = 'teacher' ORDER BY task, doc_id")
        scores = store.frame("SELECT role, task, value FROM bench_results WHERE run_id = ? "
                             "AND metric IN ('exact_match,extract', 'acc,none')", [second])
    old, new = (frame[frame.run_id == r].drop(columns="run_id").reset_index(drop=True)
                for r in (first, second))
    assert len(new) == LIMIT * len(TASKS) and old.equals(new)
    # the gate's verdict follows the scores: FAIL iff the student is below the teacher somewhere
    table = scores.pivot(index="task", columns="role", values="value")
    gated = table[table.teacher > 0]
    expected_fail = bool((gated.student < gated.teacher).any())
    assert code == (1 if expected_fail else 0)
    assert ("FAIL" if expected_fail else "PASS") in out
    # a student identical to the teacher passes even the strictest gate
    code, out, _ = kdroute(config, "bench", "--student", "hf:teacher", "--tasks", "kdroute_mc",
                           "--gate", "--min-retention", "1.0", "--no-speed",
                           monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and "PASS" in out, out
    # that run holds the same model twice under one cache key; the cache still yields one copy
    from kdroute.bench import run_bench

    result = run_bench(load_config(config), tasks=["kdroute_mc"], measure_speed=False)
    assert result.models["teacher"].cached_tasks == ["kdroute_mc"]
    assert len(result.models["teacher"].samples) == LIMIT


def test_no_cache_evaluates_the_teacher_again(world):
    root, config = world
    from kdroute.bench import run_bench

    settings = load_config(config)
    result = run_bench(settings, tasks=["kdroute_mc"], use_cache=False, measure_speed=False)
    with Store(root / "ledger.db") as store:
        assert origins(summary_of(store, result.run_id)) == {"teacher": (["kdroute_mc"], []),
                                                              "student": (["kdroute_mc"], [])}
    assert result.evaluated == ["teacher", "student"]
    assert set(result.scores("teacher")) == {"kdroute_mc"}
    assert result.report_dir is not None and (result.report_dir / "report.md").is_file()


@pytest.mark.parametrize("args, message", [
    (["--student", "hf:missing-model"], "student model directory not found"),
    (["--tasks", "kdroute_arith,not_a_task"], "unknown task not_a_task"),
])
def test_bad_input_exits_2_and_keeps_nothing(world, monkeypatch, capsys, args, message):
    root, config = world
    with Store(root / "ledger.db") as store:
        reports = set((root / "runs").iterdir())
    code, out, err = kdroute(config, "bench", *args, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    with Store(root / "ledger.db") as store:
        run = latest_run(store)
        assert run["status"] == "failed" and message in run["error"]
        for table in ("bench_results", "bench_samples"):
            assert store.frame(f"SELECT COUNT(*) AS n FROM {table} WHERE run_id = ?",
                               [run["id"]]).n[0] == 0
    assert set((root / "runs").iterdir()) == reports


def test_limit_sets_items_per_task(world, monkeypatch, capsys):
    """README's `kdroute bench --limit N --gate`: N items per task; the limit is part of the
    teacher's cache key, so another limit evaluates the teacher again."""
    root, config = world
    code, _, _ = kdroute(config, "bench", "--limit", "2", "--gate", "--tasks", "kdroute_mc",
                         "--no-speed", monkeypatch=monkeypatch, capsys=capsys)
    with Store(root / "ledger.db") as store:
        run = latest_run(store)
        counts = store.frame("SELECT role, COUNT(*) AS n FROM bench_samples WHERE run_id = ? "
                             "GROUP BY role", [run["id"]])
        summary = summary_of(store, run["id"])
    assert dict(zip(counts.role, counts.n, strict=True)) == {"teacher": 2, "student": 2}
    assert origins(summary)["teacher"] == (["kdroute_mc"], [])
    assert code == (0 if summary["gate"]["passed"] else 1)
