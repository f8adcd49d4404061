"""Bench statistics, gate, speed percentiles, cache keys and the task YAMLs (no model runs)."""

import math
import random

import numpy as np
import pytest
from conftest import REPO
from scipy import stats as scipy_stats

from kdroute.bench import stats
from kdroute.bench.harness import TaskInfo, unwrap_message
from kdroute.bench.run import cache_key
from kdroute.bench.speed import percentile
from kdroute.tinymodels import format_prompt


def test_retention_and_chance_correction():
    assert stats.retention(0.45, 0.9) == pytest.approx(0.5)
    assert stats.retention(0.3, 0.0) is None
    assert stats.chance_corrected_retention(0.25, 0.75, 0.25) == 0.0  # student at chance
    assert stats.chance_corrected_retention(0.75, 0.75, 0.25) == 1.0
    assert stats.chance_corrected_retention(0.5, 0.2, 0.25) is None  # teacher below chance


def test_paired_difference_matches_brute_force():
    rng = random.Random(0)
    s = [float(rng.random() < 0.6) for _ in range(200)]
    t = [float(rng.random() < 0.8) for _ in range(200)]
    diff, se = stats.paired_difference(s, t)
    d = np.array(s) - np.array(t)
    assert diff == pytest.approx(d.mean())
    assert se == pytest.approx(d.std(ddof=1) / math.sqrt(len(d)))
    assert stats.paired_difference(t, t) == (0.0, 0.0)
    with pytest.raises(ValueError):
        stats.paired_difference([1.0], [1.0, 0.0])


def test_z_test_p_matches_normal_distribution():
    for diff, se in ((0.1, 0.05), (-0.3, 0.2), (0.0, 0.1), (0.02, 0.5)):
        expected = 2 * scipy_stats.norm.sf(abs(diff / se))
        assert stats.z_test_p(diff, se) == pytest.approx(expected)
    assert stats.z_test_p(0.0, 0.0) == 1.0 and stats.z_test_p(0.1, 0.0) == 0.0
    diff, se = stats.unpaired_difference(0.5, 0.03, 0.7, 0.04)
    assert diff == pytest.approx(-0.2) and se == pytest.approx(0.05)


def test_gate_each_and_mean():
    retentions = {"a": 1.0, "b": 0.85, "c": None}
    each = stats.gate(retentions, 0.9, "each")
    assert not each.passed and each.failing == ("b",) and each.gated == ("a", "b")
    assert each.line().startswith("FAIL") and "b" in each.line()
    mean = stats.gate(retentions, 0.9, "mean")
    assert mean.passed and mean.mean == pytest.approx(0.925) and mean.line().startswith("PASS")
    assert not stats.gate(retentions, 0.95, "mean").passed
    assert stats.gate({"a": 0.9}, 0.9).passed  # the bar itself passes
    nothing = stats.gate({"a": None}, 0.9)
    assert nothing.passed and "nothing to gate" in nothing.line()
    assert stats.verdict(None, 0.9) == "n/a" and stats.verdict(0.89, 0.9) == "FAIL"


def test_percentile_matches_numpy():
    values = [random.Random(1).uniform(0, 10) for _ in range(37)]
    for q in (0, 50, 95, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_cache_key_depends_on_every_component():
    task = TaskInfo("kdroute_arith", "1.0", "generate_until", None, 300)
    base = cache_key("fp", task, "0.4.13", 0, 10)
    variants = [cache_key("fp2", task, "0.4.13", 0, 10),
                cache_key("fp", TaskInfo("kdroute_arith", "2.0", "generate_until", None, 300),
                          "0.4.13", 0, 10),
                cache_key("fp", TaskInfo("kdroute_sort", "1.0", "generate_until", None, 300),
                          "0.4.13", 0, 10),
                cache_key("fp", task, "0.4.14", 0, 10), cache_key("fp", task, "0.4.13", 1, 10),
                cache_key("fp", task, "0.4.13", 0, None),
                cache_key("fp", TaskInfo("kdroute_arith", "1.0", "generate_until", None, 300,
                                         docs_hash="edited"), "0.4.13", 0, 10)]
    assert base == cache_key("fp", task, "0.4.13", 0, 10)
    assert len({base, *variants}) == 8


def test_chat_messages_lose_the_qa_wrapper_only():
    wrapped = {"role": "user", "content": format_prompt("What is 2 + 2?")}
    assert unwrap_message(wrapped)["content"] == "What is 2 + 2?"
    other = {"role": "user", "content": "Question: hi"}
    assert unwrap_message(other) == other
    assert unwrap_message({"role": "assistant", "content": " 4"})["content"] == "4"


def test_task_yamls_load_with_the_shared_prompt_format():
    from kdroute.bench.harness import resolve_tasks, task_manager

    manager = task_manager(["kdroute_skills"], REPO / "evalsets")
    tasks = resolve_tasks(["kdroute_skills"], manager)
    assert [t.name for t in tasks] == ["kdroute_arith", "kdroute_reverse", "kdroute_sort",
                                       "kdroute_count", "kdroute_lookup", "kdroute_mc"]
    assert {t.output_type for t in tasks} == {"generate_until", "multiple_choice"}
    assert all(t.n_docs == 300 and t.version in ("1.0", "2.0") for t in tasks)
    assert len({t.docs_hash for t in tasks}) == len(tasks)
    assert tasks[-1].chance == pytest.approx(0.25) and tasks[0].chance is None
    # every prompt is exactly the tiny models' training format; targets are the responses
    for task in manager.load(["kdroute_arith", "kdroute_mc"])["tasks"].values():
        for doc in list(task.eval_docs)[:50]:
            assert task.doc_to_text(doc) == format_prompt(doc["prompt"])
            target = task.doc_to_target(doc)
            chosen = task.doc_to_choice(doc)[target] if task.OUTPUT_TYPE == "multiple_choice" \
                else target
            assert chosen == doc["response"]
