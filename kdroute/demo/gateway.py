"""`kdroute serve` as the demo runs it: a subprocess on a free loopback port with a one-off client
key, its settings changed only through `KDROUTE_<SECTION>_<KEY>` variables of that process (the
user's config file is never rewritten), stopped gracefully so the ledger writer flushes."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

from kdroute.errors import BackendError

KEY_VARIABLE = "KDROUTE_DEMO_CLIENT_KEYS"  # the demo gateway's gateway.api_keys_env
# How long `kdroute serve` may take to answer /ready: a loaded 2-core machine imports litellm
# slowly. KDROUTE_DEMO_READY_TIMEOUT_S changes it (the variable is not a config key).
READY_TIMEOUT_S = 600.0


POLL_INTERVAL_S = 0.5  # the demo gateway's monitor poll: alerts are decided this often


def drift_window(requests: int) -> int:
    """The rolling window of --drift: a tenth of the replay, at least 20 evaluations."""
    return max(20, requests // 10)


def drift_pace(requests: int) -> int:
    """Requests sent between two waits for the shadow pipeline in --drift: a quarter window."""
    return drift_window(requests) // 4


def monitor_env(shadow_rate: float, *, drift: bool, requests: int) -> dict[str, str]:
    """The `[monitor]` keys of the demo's gateway.

    Shadowing samples `shadow_rate` of the student-served requests, with shadow answers as long
    as the clients' (a longer shadow answer would disagree by length alone). The demo watches
    the stream and each task family, whose floors it sets from the healthy pair's baselines; it
    turns the router-score slices off (the prompts near the threshold agree less even when
    healthy, and the baselines cannot set their floors). With `drift` every student answer is
    shadowed and every breaker-routed request probed, and the rolling window is a tenth of the
    replay (at least 20), so the alert opens within a few dozen bad answers and resolves within
    a few dozen good ones: the whole story fits in one replay.
    """
    from kdroute.demo.traffic import MAX_TOKENS

    env = {"shadow_rate": shadow_rate, "shadow_max_tokens": MAX_TOKENS,
           "poll_interval_s": POLL_INTERVAL_S, "webhook_url": "", "score_buckets": 0}
    if drift:
        window = drift_window(requests)
        env.update(shadow_rate=1.0, probe_rate=1.0, breaker="true", window=window,
                   min_samples=window // 2)
    return {f"KDROUTE_MONITOR_{k.upper()}": str(v) for k, v in env.items()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def last_error_line(log: Path) -> str:
    """The `error: ...` line a kdroute command ends with, else the log's last line."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no output)"
    errors = [ln for ln in lines if ln.startswith("error:")]
    line = (errors or lines or ["(no output)"])[-1]
    return line.removeprefix("error:").strip()


class DemoGateway:
    """`with DemoGateway(...) as gw:` gives `gw.base_url` and `gw.api_key` once /ready says yes."""

    def __init__(self, cli: list[str], cwd: Path, env: dict[str, str], log: Path):
        self.cli, self.cwd, self.overrides, self.log = cli, cwd, env, log
        self.api_key = "demo-" + secrets.token_urlsafe(12)
        self.proc: subprocess.Popen | None = None
        self.base_url = ""

    def __enter__(self) -> DemoGateway:
        import httpx

        port = free_port()
        env = dict(os.environ, **self.overrides, KDROUTE_GATEWAY_HOST="127.0.0.1",
                   KDROUTE_GATEWAY_PORT=str(port), KDROUTE_GATEWAY_WORKERS="1",
                   KDROUTE_GATEWAY_API_KEYS_ENV=KEY_VARIABLE)
        env[KEY_VARIABLE] = self.api_key
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cli + ["serve", "--log-level", "warning"],
                                         cwd=self.cwd, env=env, stdout=out,
                                         stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {self.api_key}"}
        limit = float(os.environ.get("KDROUTE_DEMO_READY_TIMEOUT_S") or READY_TIMEOUT_S)
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BackendError(f"kdroute serve exited {self.proc.returncode} at start-up: "
                                   f"{last_error_line(self.log)} (log: {self.log})")
            try:
                if httpx.get(f"{base}/ready", headers=headers, timeout=2).status_code == 200:
                    self.base_url = f"{base}/v1"
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.__exit__()
        raise BackendError(f"kdroute serve was not ready within {limit:.0f} s "
                           f"(log: {self.log})")

    def __exit__(self, *exc) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # graceful: the writer and the monitor flush
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
