import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "lm_eval", "litellm", "streamlit")


def run(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "kdroute", *args], capture_output=True,
                          text=True, env=env, cwd=cwd)


def test_help_lists_every_stage_group():
    proc = run("--help")
    assert proc.returncode == 0
    for group in ("distill", "bench", "route", "serve", "monitor", "dashboard", "demo", "db"):
        assert group in proc.stdout


def test_light_imports_stay_light():
    code = ("import sys, json, kdroute.store, kdroute.cli, kdroute.config; "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_help_of_every_command_is_light():
    code = ("import sys, json\nfrom kdroute.cli import app\nfrom typer.testing import CliRunner\n"
            "r = CliRunner()\n"
            "for args in (['--help'], ['route', '--help'], ['db', '--help'], ['bench', '--help'],"
            " ['distill', '--help'], ['serve', '--help']):\n"
            "    assert r.invoke(app, args).exit_code == 0, args\n"
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_db_commands(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[store]\npath = "ledger.db"\n')
    assert run("--config", str(config), "db", "path").stdout.strip() == str(tmp_path / "ledger.db")
    stats = run("--config", str(config), "db", "stats")
    assert stats.returncode == 0 and "requests" in stats.stdout
    migrate = run("--config", str(config), "db", "migrate")
    assert migrate.returncode == 0 and "m001_initial" in migrate.stdout
