"""Benching OpenAI-compatible endpoints: a real HTTP server on 127.0.0.1 that knows the skill
suite's answers (an "oracle"), evaluated through lm-eval's chat-completions model."""

import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import REPO

from kdroute.cli import common, main
from kdroute.store import Store
from kdroute.tinymodels import save_tiny_model

LIMIT = 3
GENERATION_TASKS = ["kdroute_arith", "kdroute_reverse", "kdroute_sort", "kdroute_count",
                    "kdroute_lookup"]


class Oracle:
    """Answers every skill-suite prompt correctly, but only when it arrives as the bare user
    message (a prompt still wrapped in "Q: ...\\nA:" gets a wrong answer)."""

    def __init__(self):
        rows = [json.loads(line) for split in ("test", "validation")
                for line in (REPO / "evalsets" / "data" / f"{split}.jsonl").open()]
        self.answers = {row["prompt"]: row["response"] for row in rows}
        self.prompts: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def _handler(oracle):  # noqa: N805 - the handler closes over the oracle
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self._send({"object": "list", "data": [{"id": "oracle", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                prompt = body["messages"][-1]["content"]
                oracle.prompts.append(prompt)
                answer = oracle.answers.get(prompt, "no idea")
                self._send({"id": "x", "object": "chat.completion", "model": body["model"],
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": answer}}],
                            "usage": {"prompt_tokens": len(prompt),
                                      "completion_tokens": len(answer),
                                      "total_tokens": len(prompt) + len(answer)}})

            def _send(self, payload):
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


@pytest.fixture(scope="module")
def oracle():
    server = Oracle()
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_endpoint")
    save_tiny_model(root / "tiny", seed=0, n_layer=1, n_head=2, n_embd=32)
    config = root / "config.toml"
    config.write_text(
        '[teacher]\nmodel = "hf:tiny"\n[student]\nmodel = "hf:tiny"\n[store]\npath = "ledger.db"\n'
        f'[bench]\ninclude_path = "{REPO / "evalsets"}"\nlimit = {LIMIT}\noutput_dir = "runs"\n'
        'speed_prompts = 2\nspeed_new_tokens = 4\ndevice = "cpu"\n')
    return root, config


def kdroute(config, *args, monkeypatch, capsys):
    monkeypatch.setattr(common.console, "width", 200)
    monkeypatch.setattr(sys, "argv", ["kdroute", "--config", str(config), *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def run_rows(root, table, role):
    with Store(root / "ledger.db") as store:
        run_id = store.frame("SELECT id FROM runs ORDER BY started_at DESC LIMIT 1").id[0]
        return store.frame(f"SELECT * FROM {table} WHERE run_id = ? AND role = ?", [run_id, role])


def test_chat_endpoint_teacher_beats_a_random_student_and_the_gate_fails(
        world, oracle, monkeypatch, capsys):
    root, config = world
    code, out, _ = kdroute(config, "bench", "--teacher-endpoint", oracle.url, "--teacher-model",
                           "oracle", "--gate", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1 and "FAIL" in out
    assert "chat endpoints give no log-likelihoods" in out  # kdroute_mc, marked not hidden
    teacher = run_rows(root, "bench_results", "teacher")
    scored = teacher[teacher.task != "speed"]
    assert sorted(scored.task.unique()) == sorted(GENERATION_TASKS)
    assert (scored[scored.metric == "exact_match,extract"].value == 1.0).all()
    samples = run_rows(root, "bench_samples", "teacher")
    assert len(samples) == LIMIT * len(GENERATION_TASKS) and (samples.score == 1.0).all()
    assert not any(p.startswith("Q:") for p in oracle.prompts)  # the Q/A wrapper was removed
    student = run_rows(root, "bench_results", "student")
    assert "kdroute_mc" in set(student.task)  # the local student still runs log-likelihood


def test_endpoint_student_and_routed_system_against_a_cached_teacher(
        world, oracle, monkeypatch, capsys):
    root, config = world
    oracle.prompts.clear()
    code, out, _ = kdroute(
        config, "bench", "--teacher-endpoint", oracle.url, "--teacher-model", "oracle",
        "--student-endpoint", oracle.url, "--student-model", "oracle",
        "--system-endpoint", oracle.url, "--system-model", "kdroute/auto",
        "--gate", "--min-retention", "1.0", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and "PASS" in out, out
    assert "system vs teacher" in out and "student vs teacher" in out
    # the teacher (and its speed figures) came from the ledger: only student + system were asked
    per_model = LIMIT * len(GENERATION_TASKS) + 2  # items + speed prompts
    assert len(oracle.prompts) == 2 * per_model
    for role in ("student", "system"):
        samples = run_rows(root, "bench_samples", role)
        assert len(samples) == LIMIT * len(GENERATION_TASKS) and (samples.score == 1.0).all()


def test_unreachable_endpoint_exits_2_and_keeps_nothing(world, monkeypatch, capsys):
    root, config = world
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _, err = kdroute(config, "bench", "--student-endpoint", f"http://127.0.0.1:{port}/v1",
                           "--student-model", "x", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and err.startswith("error: student endpoint") and "unreachable" in err
    with Store(root / "ledger.db") as store:
        run = store.frame("SELECT * FROM runs ORDER BY started_at DESC LIMIT 1").iloc[0]
        assert run["status"] == "failed"
        assert store.frame("SELECT COUNT(*) AS n FROM bench_samples WHERE run_id = ?",
                           [run["id"]]).n[0] == 0
