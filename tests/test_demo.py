"""`kdroute demo` end to end on a small scale: the committed demo teacher, a random tiny student,
a few bench items, a router trained on them, the gateway served as a real subprocess."""

import sqlite3
import subprocess
import sys

from kdroute.tinymodels import save_tiny_model
from tests.conftest import REPO


def test_demo_runs_every_stage_and_logs_every_request(tmp_path):
    (tmp_path / "evalsets").symlink_to(REPO / "evalsets")
    save_tiny_model(tmp_path / "student", n_layer=1, n_embd=32, n_head=2)
    teacher = REPO / "models" / "demo-teacher"
    (tmp_path / "config.toml").write_text(
        f'[teacher]\nmodel = "hf:{teacher}"\ninput_price_per_1m = 5.0\noutput_price_per_1m = 15.0\n'
        '[student]\nmodel = "hf:student"\ninput_price_per_1m = 0.1\noutput_price_per_1m = 0.3\n'
        '[store]\npath = "ledger.db"\n[bench]\nspeed_prompts = 2\nspeed_new_tokens = 4\n')
    proc = subprocess.run(
        [sys.executable, "-m", "kdroute", "--config", str(tmp_path / "config.toml"), "demo",
         "--bench-limit", "6", "--requests", "8"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "every request logged: True" in proc.stdout
    assert (tmp_path / "routers" / "demo.json").is_file()
    db = sqlite3.connect(tmp_path / "ledger.db")
    kinds = dict(db.execute("SELECT kind, status FROM runs").fetchall())
    assert kinds.get("bench") == "done"
    rows = db.execute("SELECT requested_model, served_role, cost_usd, teacher_cost_usd, status "
                      "FROM requests").fetchall()
    # the routed traffic, then the same 8 prompts forced to each model as the baselines
    by_model = {m: [r for r in rows if r[0] == m]
                for m in ("kdroute/auto", "kdroute/student", "kdroute/teacher")}
    assert [len(v) for v in by_model.values()] == [8, 8, 8] and len(rows) == 24
    assert all(r[4] == 200 for r in rows)
    assert {r[1] for r in by_model["kdroute/auto"]} <= {"teacher", "student"}
    assert {r[1] for r in by_model["kdroute/student"]} == {"student"}
    assert {r[1] for r in by_model["kdroute/teacher"]} == {"teacher"}
    assert "always student (same traffic)" in proc.stdout
    assert "always teacher (same traffic)" in proc.stdout
    # the teacher-equivalent cost never undercuts what was paid
    assert all(teacher_cost >= cost for _, _, cost, teacher_cost, _ in rows)
