"""`kdroute demo`: the whole pipeline on the embedded default, each stage through its own CLI.

1. distill the demo student from the committed demo teacher (`kdroute distill --preset demo`),
2. bench it against the teacher on the skill suite (`kdroute bench`),
3. train a router on the paired bench samples (`kdroute route train`),
4. serve the gateway with that router and send it chat traffic from the skill suite's validation split,
5. print what routing saved against "always teacher", and where quality stood, from the ledger.

Stages run as subprocesses of `python -m kdroute`, so what the demo shows is exactly what a user
typing the commands gets; a failing stage stops the demo with its exit code.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kdroute.cli.common import console
from kdroute.config import Settings
from kdroute.errors import BackendError, KdrouteError
from kdroute.jsonl import iter_jsonl


@dataclass
class DemoOptions:
    bench_limit: int = 300         # items per task in the bench step (300 = the whole test split)
    requests: int = 120            # chat requests sent through the gateway
    retrain_student: bool = False  # distill again even when models/demo-student exists
    seed: int = 0


def run_demo(settings: Settings, config_path: Path | None, opts: DemoOptions) -> dict:
    root = Path(settings.base_dir)
    cli = [sys.executable, "-m", "kdroute"] + (["--config", str(config_path)] if config_path
                                                else [])
    student_dir = settings.model_path(settings.student.model)
    if opts.retrain_student or not (student_dir / "config.json").is_file():
        _stage("1/4 distill the student", cli + ["distill", "--preset", "demo"], root)
    else:
        console.print(f"[bold]1/4[/] student already at {student_dir} (--retrain to distill again)")
    _stage("2/4 bench student vs teacher", cli + ["bench", "--limit", str(opts.bench_limit)], root)
    run_id = _latest_run(settings, "bench")
    router_path = settings.path("routers/demo.json")
    _stage("3/4 train the router on the bench samples",
           cli + ["route", "train", "--run", run_id, "--output", str(router_path)], root)
    console.rule("[bold]4/4 serve the gateway and send traffic")
    prompts = _traffic(root, opts.requests, opts.seed)
    started = _now_iso()
    with _gateway(cli, root, router_path) as base_url:
        correct = _send(base_url, prompts)
        # the same traffic forced to each model: what routing is measured against
        baselines = {role: _send(base_url, prompts, f"kdroute/{role}", f"always {role}")
                     for role in ("student", "teacher")}
    summary = _summary(settings, started, correct)
    summary["baselines"] = {f"always {role}": sum(c.values()) / len(c)
                            for role, c in baselines.items()}
    _print_summary(summary)
    return summary


def _stage(title: str, argv: list[str], cwd: Path) -> None:
    console.rule(f"[bold]{title}")
    console.print(f"$ kdroute {' '.join(argv[3:])}", style="dim", markup=False)
    proc = subprocess.run(argv, cwd=cwd)
    if proc.returncode != 0:
        raise KdrouteError(f"demo stopped: `kdroute {' '.join(argv[3:])}` exited "
                           f"{proc.returncode}")


def _latest_run(settings: Settings, kind: str) -> str:
    from kdroute.store import Store

    with Store.from_settings(settings) as store:
        run_id = store.latest_run(kind)
    if run_id is None:
        raise KdrouteError(f"no finished {kind} run in the ledger")
    return run_id


def _traffic(root: Path, n: int, seed: int) -> list[dict]:
    """A shuffled sample of the skill suite's validation split: chat prompts with known answers
    that the router never saw (it is trained on the bench samples, i.e. the test split)."""
    rows = [row for _, row in iter_jsonl(root / "evalsets/data/validation.jsonl")]
    rows = [r for r in rows if r["family"] != "mc"]  # multiple choice is scored by likelihood
    random.Random(seed).shuffle(rows)
    return rows[:n]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _gateway:
    """`kdroute serve` as a subprocess on a free loopback port, stopped gracefully on exit (the
    ledger writer flushes at shutdown)."""

    def __init__(self, cli: list[str], root: Path, router_path: Path):
        self.cli, self.root, self.router_path = cli, root, router_path

    def __enter__(self) -> str:
        import httpx

        port = _free_port()
        env = dict(os.environ, KDROUTE_ROUTER_ARTIFACT=str(self.router_path),
                   KDROUTE_GATEWAY_HOST="127.0.0.1", KDROUTE_GATEWAY_PORT=str(port))
        env.pop(env.get("KDROUTE_GATEWAY_API_KEYS_ENV", "KDROUTE_API_KEYS"), None)
        self.proc = subprocess.Popen(self.cli + ["serve", "--log-level", "warning"],
                                     cwd=self.root, env=env)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BackendError(f"kdroute serve exited {self.proc.returncode} at start-up")
            try:
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    console.print(f"gateway ready at {base}/v1")
                    return f"{base}/v1"
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.__exit__()
        raise BackendError("kdroute serve did not become ready within 120 s")

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(subprocess.signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _send(base_url: str, prompts: list[dict], model: str = "kdroute/auto",
          label: str = "chat requests") -> dict[str, bool]:
    """Send each prompt as a chat request to `model`; request id -> answer correct."""
    import httpx
    from rich.progress import track

    correct: dict[str, bool] = {}
    with httpx.Client(base_url=base_url, timeout=120) as client:
        for row in track(prompts, description=label, console=console):
            resp = client.post("/chat/completions", json={
                "model": model, "max_tokens": 24, "temperature": 0,
                "messages": [{"role": "user", "content": row["prompt"]}]})
            if resp.status_code != 200:
                raise BackendError(f"gateway answered {resp.status_code}: {resp.text[:200]}")
            answer = resp.json()["choices"][0]["message"]["content"].strip()
            correct[resp.headers["x-kdroute-request-id"]] = answer == row["response"].strip()
    return correct


def _now_iso() -> str:
    from kdroute.store import now

    return now()


def _summary(settings: Settings, since: str, correct: dict[str, bool]) -> dict:
    from kdroute.store import Store

    with Store.from_settings(settings) as store:
        frame = store.requests_frame(since=since)
    frame = frame[frame["id"].isin(correct)]
    frame = frame.assign(correct=frame["id"].map(correct))
    by_role = frame.groupby("served_role")["correct"].agg(["count", "mean"])
    cost, teacher_cost = float(frame["cost_usd"].sum()), float(frame["teacher_cost_usd"].sum())
    return {
        "requests": int(len(frame)),
        "logged": int(len(frame)) == len(correct),
        "teacher_share": float((frame["served_role"] == "teacher").mean()),
        "accuracy": float(frame["correct"].mean()),
        "accuracy_by_model": {k: {"requests": int(v["count"]), "accuracy": float(v["mean"])}
                              for k, v in by_role.iterrows()},
        "cost_usd": cost, "teacher_cost_usd": teacher_cost,
        "savings_usd": teacher_cost - cost,
        "savings_share": (teacher_cost - cost) / teacher_cost if teacher_cost else 0.0,
        "fallbacks": int(frame["fallback"].fillna(0).sum()),
    }


def _print_summary(s: dict) -> None:
    from rich.table import Table

    console.rule("[bold]what routing did")
    table = Table("served by", "requests", "exact-match accuracy")
    for role, v in s["accuracy_by_model"].items():
        table.add_row(role, str(v["requests"]), f"{v['accuracy']:.1%}")
    table.add_row("routed system", str(s["requests"]), f"{s['accuracy']:.1%}", style="bold")
    for name, accuracy in s.get("baselines", {}).items():
        table.add_row(f"{name} (same traffic)", str(s["requests"]), f"{accuracy:.1%}")
    console.print(table)
    console.print(f"teacher calls: {s['teacher_share']:.1%} of requests; every request logged: "
                  f"{s['logged']}; fallbacks: {s['fallbacks']}")
    console.print(f"cost ${s['cost_usd']:.6f} vs always-teacher ${s['teacher_cost_usd']:.6f}: "
                  f"saved ${s['savings_usd']:.6f} ({s['savings_share']:.1%})")
    console.print("next: `kdroute serve` to run the gateway yourself, `kdroute db stats` for the "
                  "ledger")
