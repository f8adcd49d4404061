"""`kdroute monitor status | agree | replay` through the real CLI, and bad monitor config as one
line at load."""

import csv
import json
import subprocess
import sys

import pytest

from kdroute.config import load_config
from kdroute.errors import ConfigError
from kdroute.store import Store


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "kdroute", *args], capture_output=True,
                          text=True, cwd=cwd)


def write_csv(path, rows):
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("text, key, expected", [
    ('agreement_method = "answer+vibes"', "monitor.agreement_method", "unknown agreement tier"),
    ('agreement_method = "embedding+answer"', "monitor.agreement_method", "cheapest first"),
    ('webhook_url = "hooks.example.com/x"', "monitor.webhook_url", "http(s) url"),
    ('webhook_url = "http://:80/x"', "monitor.webhook_url", "http(s) url"),
    ("shadow_budget_usd = 0", "monitor.shadow_budget_usd", "greater than 0"),
    ("agreement_floor = 1.5", "monitor.agreement_floor", "less than or equal to 1"),
    ("agreement_floor = -0.1", "monitor.agreement_floor", "greater than or equal to 0"),
    ("probe_rate = 0", "monitor.probe_rate", "greater than 0"),
])
def test_bad_monitor_config_is_one_line_at_load(tmp_path, text, key, expected):
    config = tmp_path / "c.toml"
    config.write_text(f"[monitor]\n{text}\n")
    with pytest.raises(ConfigError) as info:
        load_config(config, env={})
    message = str(info.value)
    assert f"{key}:" in message and expected in message and "\n" not in message
    proc = run("--config", str(config), "monitor", "status")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and key in proc.stderr


def test_judge_tier_and_judge_model_load():
    settings = load_config(None, env={"KDROUTE_MONITOR_AGREEMENT_METHOD": "answer + judge"})
    assert settings.monitor.tiers == ("answer", "judge") and settings.monitor.judge is None


def test_agree_scores_recorded_pairs_and_measures_them(tmp_path):
    pairs = write_csv(tmp_path / "pairs.csv", [
        {"prompt": "2+2?", "student_response": "2 + 2 = 4", "teacher_response": "#### 4",
         "s_ok": "True", "t_ok": "True"},
        {"prompt": "3*3?", "student_response": "The answer is 6", "teacher_response": "It is 9.",
         "s_ok": "False", "t_ok": "True"},
        {"prompt": "Pick one", "student_response": "(B)", "teacher_response": "B",
         "s_ok": "True", "t_ok": "True"},
        {"prompt": "10/4?", "student_response": "#### 2.50", "teacher_response": "$2.5",
         "s_ok": "True", "t_ok": "False"},
    ])
    out = tmp_path / "scored.jsonl"
    proc = run("monitor", "agree", str(pairs), "-o", str(out), "--student-correct", "s_ok",
               "--teacher-correct", "t_ok", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["method"], r["verdict"]) for r in rows] == \
        [("answer", 1), ("answer", 0), ("answer", 1), ("answer", 1)]
    assert rows[0]["prompt"] == "2+2?" and rows[1]["score"] == 0.0
    assert "precision of agree => student as right as the teacher 1.000" in proc.stdout
    assert "agree => both correct 0.667" in proc.stdout and "recall of both-correct pairs 1.000" \
        in proc.stdout


def test_agree_names_a_missing_column_in_one_line(tmp_path):
    pairs = write_csv(tmp_path / "p.csv", [{"prompt": "q", "student": "a", "teacher": "b"}])
    proc = run("monitor", "agree", str(pairs), "-o", str(tmp_path / "o.csv"), cwd=tmp_path)
    assert proc.returncode == 2 and "no column 'student_response' (--student-column)" in \
        proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_replay_routellm_file_shows_where_the_alert_opens(tmp_path):
    rows = [{"prompt": f"p{i}", "weak": "True", "strong": "True"} for i in range(150)]
    rows += [{"prompt": f"q{i}", "weak": "False", "strong": "True"} for i in range(100)]
    data = write_csv(tmp_path / "recorded.csv", rows)
    proc = run("monitor", "replay", str(data), "--student", "weak", "--teacher", "strong",
               "--floor", "0.8", "--window", "50", "--min-samples", "20", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "250 evaluations" in proc.stdout and "(correctness)" in proc.stdout
    opened = [line for line in proc.stdout.splitlines() if "│ open" in line and "quality" in line]
    sample = int(opened[0].split("│")[1])
    # a 50-sample window of successes: ~16 failures in a row push its upper bound below 0.8
    assert 160 < sample <= 175


def test_replay_a_ledger_export_with_weights_and_slices(tmp_path):
    rows = [{"verdict": 1, "inclusion_prob": 0.5, "slice": "family:chat", "router_score": 0.1}
            for _ in range(60)]
    rows += [{"verdict": 0, "inclusion_prob": 0.5, "slice": "family:code", "router_score": 0.4}
             for _ in range(60)]
    rows += [{"verdict": "", "inclusion_prob": 0.5, "slice": "all", "router_score": ""}]
    export = tmp_path / "shadow.jsonl"
    export.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = run("monitor", "replay", str(export), "--min-samples", "20", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "(ledger, 1 undecided skipped)" in proc.stdout
    assert "family:code" in proc.stdout and "family:chat" not in proc.stdout


def test_status_shows_agreement_alerts_breaker_and_net_savings(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[store]\npath = "ledger.db"\n[monitor]\nmin_samples = 10\n')
    with Store(tmp_path / "ledger.db") as store:
        store.insert_requests([{"id": f"r{i}", "ts": f"2026-01-01T00:00:{i:02d}",
                                "cost_usd": 0.001, "teacher_cost_usd": 0.01} for i in range(20)])
        for i in range(20):
            store.insert_shadow({"request_id": f"r{i}", "kind": "shadow", "status": "ok",
                                 "verdict": int(i % 4 != 0), "inclusion_prob": 1.0,
                                 "slice": "all", "router_score": 0.1, "teacher_cost_usd": 0.01})
        store.open_alert_once({"kind": "quality", "slice": "all", "statistic": "wilson_agreement",
                               "value": 0.5, "bound": 0.7, "n": 20, "window": 200,
                               "threshold": 0.8, "message": "test alert"})
    proc = run("--config", str(config), "monitor", "status", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    overall = report["agreement"][0]
    assert (overall["slice"], overall["n"], overall["value"]) == ("all", 20, 0.75)
    assert overall["lower"] < 0.75 < overall["upper"] and overall["state"] == "alert"
    assert report["breaker_open"] == ["all"]
    assert report["savings"]["gross_usd"] == pytest.approx(20 * 0.009)
    assert report["savings"]["net_usd"] == pytest.approx(20 * 0.009 - 20 * 0.01)
    text = run("--config", str(config), "monitor", "status").stdout
    assert "OPEN for all" in text and "score:0.00-0.25" in text and "net $-0.0200" in text


def test_agree_reads_named_columns_and_calibrates_the_embedding_threshold(tmp_path):
    """README's `kdroute monitor agree pairs.csv -o scored.csv --student-column s
    --teacher-column t --student-correct s_ok --teacher-correct t_ok --calibrate`."""
    from typer.testing import CliRunner

    from kdroute.cli import app

    cities = ["Paris", "Rome", "Madrid", "Berlin", "Lisbon", "Vienna", "Oslo", "Dublin"]
    rows = [{"prompt": f"q{i}", "s": f"The capital is {c}.", "t": f"The capital is {c}.",
             "s_ok": "True", "t_ok": "True"} for i, c in enumerate(cities * 3)]
    rows += [{"prompt": f"w{i}", "s": "The cat sat on the mat all afternoon.",
              "t": f"Quarterly revenue rose by {i + 10} percent.", "s_ok": "False", "t_ok": "True"}
             for i in range(4)]
    pairs = write_csv(tmp_path / "pairs.csv", rows)
    res = CliRunner().invoke(app, ["monitor", "agree", str(pairs), "-o", str(tmp_path /
                                   "scored.csv"), "--student-column", "s", "--teacher-column", "t",
                                   "--student-correct", "s_ok", "--teacher-correct", "t_ok",
                                   "--calibrate"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    with (tmp_path / "scored.csv").open() as handle:
        scored = list(csv.DictReader(handle))
    assert [r["prompt"] for r in scored] == [r["prompt"] for r in rows]
    assert {r["verdict"] for r in scored[:24]} == {"1"}  # equal answers agree
    line = next(x for x in res.output.splitlines() if x.startswith("embedding threshold"))
    threshold = float(line.split(": ")[1].split()[0])
    # 24 equal pairs (cosine 1) and 4 unrelated ones: precision 0.95 allows one unrelated pair
    # above the threshold, so it sits at the most similar unrelated pair, far below 1
    assert -1.0 <= threshold < 0.9
