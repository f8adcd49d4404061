"""`kdroute dashboard`: light help, one-line errors before Streamlit starts, loopback only."""

import json
import socket
import subprocess
import sys
from pathlib import Path

from kdroute.cli.dashboard import APP, streamlit_command
from kdroute.store import Store


def run(*args):
    return subprocess.run([sys.executable, "-m", "kdroute", "dashboard", *args],
                          capture_output=True, text=True, timeout=120)


def test_help_explains_and_stays_light():
    code = ("import sys, json\nfrom kdroute.cli import app\nfrom typer.testing import CliRunner\n"
            "out = CliRunner().invoke(app, ['dashboard', '--help'])\n"
            "assert out.exit_code == 0, out.output\n"
            "print(json.dumps([out.output, 'streamlit' in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text, imported = json.loads(proc.stdout)
    assert "--db" in text and "--port" in text and "127.0.0.1" in text
    assert imported is False


def test_missing_or_foreign_ledger_stops_with_one_line(tmp_path):
    missing = run("--db", str(tmp_path / "nope.db"))
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0 and "no ledger there" in missing.stderr
    (tmp_path / "x.db").write_text("plain text\n" * 50)
    foreign = run("--db", str(tmp_path / "x.db"))
    assert foreign.returncode == 1 and "not a kdroute ledger" in foreign.stderr


def test_a_busy_port_is_refused_before_streamlit_starts(tmp_path):
    Store(tmp_path / "l.db").close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        busy = run("--db", str(tmp_path / "l.db"), "--port", str(port))
    assert busy.returncode == 2 and f"--port {port}: already in use" in busy.stderr


def test_streamlit_listens_on_loopback_only_without_telemetry(tmp_path):
    command = streamlit_command(APP, tmp_path / "l.db", 9999, Path("c.toml"))
    flags = dict(zip(command[5::2], command[6::2], strict=False))
    assert flags["--server.address"] == "127.0.0.1" and flags["--server.port"] == "9999"
    assert flags["--browser.gatherUsageStats"] == "false"
    assert command[command.index("--") + 1:] == ["--db", str(tmp_path / "l.db"), "--config",
                                                 "c.toml"]
    assert APP.is_file()
