"""Claim: the monitor costs the request path next to nothing — client p50 latency with the
default 5 % shadowing stays within 5 % of the same gateway with shadowing off. (A slow or failing
shadow teacher is the gateway tests' business: tests/test_monitor_gateway.py shows clients
answered while the shadow call still waits.)

Same run, same fake OpenAI-compatible back ends (real HTTP servers on 127.0.0.1), sequential
requests from one httpx client to `kdroute/auto` (the default heuristic router sends "say hi" to
the student, so every request is eligible for a shadow call):
  off        monitor.shadow_rate = 0 (the breaker and the poll loop still run)
  shadow_5   the default 5 %
  shadow_100 every request shadowed (the worst case; CPU only)
Latency: `off` and `shadow_5` served side by side, requests alternating between them (which one
goes first alternates too), so the shared machine's load hits both alike. CPU: process CPU per request of each gateway alone, the
median of 4 passes in mirrored order (client, gateway, back ends and the background shadow calls
share this process, so the figure includes the shadow work).

Run: `python benchmarks/bench_monitor_overhead.py` (about a minute).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import claim, write_result  # noqa: E402

N = 400
WARMUP = 40
ROUNDS = 2  # of the mirrored pair of passes
CONFIGS = [("off", 0.0), ("shadow_5", 0.05), ("shadow_100", 1.0)]
URL = "/v1/chat/completions"
BODY = {"messages": [{"role": "user", "content": "say hi"}], "max_tokens": 8,
        "model": "kdroute/auto"}


def settings_for(teacher, student, db: Path, rate: float):
    from kdroute.config import Settings

    return Settings.model_validate({
        "teacher": {"model": "openai/big", "api_base": teacher.url,
                    "input_price_per_1m": 5.0, "output_price_per_1m": 15.0},
        "student": {"model": "openai/small", "api_base": student.url,
                    "input_price_per_1m": 0.1, "output_price_per_1m": 0.3},
        "store": {"path": str(db)},
        "monitor": {"shadow_rate": rate, "shadow_budget_usd": 1e6, "shadow_queue_size": 100_000}})


def post_timed(client, url: str) -> float:
    t0 = time.perf_counter()
    client.post(url, json=BODY).raise_for_status()
    return (time.perf_counter() - t0) * 1000


def interleaved(urls: dict[str, str]) -> dict[str, dict]:
    """Requests alternate between the gateways, so the shared machine's load hits all alike."""
    import httpx

    latencies: dict[str, list[float]] = {name: [] for name in urls}
    with httpx.Client(timeout=30) as client:
        for _ in range(WARMUP):
            for url in urls.values():
                post_timed(client, url)
        order = list(urls.items())
        for i in range(N):  # which gateway goes first alternates: position effects cancel
            for name, url in (order if i % 2 == 0 else order[::-1]):
                latencies[name].append(post_timed(client, url))
    return {name: {"p50_ms": round(statistics.median(v), 3),
                   "p95_ms": round(sorted(v)[int(0.95 * N)], 3)} for name, v in latencies.items()}


def cpu_per_request(url: str) -> float:
    """Process CPU per request of one gateway alone (its background shadow work included)."""
    import httpx

    with httpx.Client(timeout=30) as client:
        for _ in range(WARMUP):
            post_timed(client, url)
        cpu0 = time.process_time()
        for _ in range(N):
            post_timed(client, url)
        return (time.process_time() - cpu0) * 1000 / N


def main() -> None:
    from kdroute.gateway import create_app
    from kdroute.testing.fake_openai import AppServer, FakeOpenAI

    figures: dict = {"requests": N}
    with FakeOpenAI("teacher") as teacher, FakeOpenAI("student") as student, \
            tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        apps = {name: create_app(settings_for(teacher, student, tmp / f"{name}.db", rate), env={})
                for name, rate in CONFIGS}
        with AppServer(apps["off"]) as off, AppServer(apps["shadow_5"]) as s5:
            latency = interleaved({"off": off.url + URL, "shadow_5": s5.url + URL})
        cpu: dict[str, list[float]] = {name: [] for name, _ in CONFIGS}
        for i, (name, rate) in enumerate((CONFIGS + CONFIGS[::-1]) * ROUNDS):
            app = create_app(settings_for(teacher, student, tmp / f"{name}-{i}.db", rate), env={})
            teacher.reset()
            with AppServer(app) as gateway:
                cpu[name].append(cpu_per_request(gateway.url + URL))
            shadow_calls = len(teacher.completion_calls())
            print(f"{name}: {cpu[name][-1]:.3f} ms CPU per request, {shadow_calls} shadow calls",
                  flush=True)
    for name, _ in CONFIGS:
        figures[name] = dict(latency.get(name, {}),
                             cpu_ms_per_request=round(statistics.median(cpu[name]), 3))
    off_cpu = figures["off"]["cpu_ms_per_request"]
    figures["shadow_5"]["p50_ratio_vs_off"] = round(
        figures["shadow_5"]["p50_ms"] / figures["off"]["p50_ms"], 3)
    for name in ("shadow_5", "shadow_100"):
        figures[name]["cpu_ratio_vs_off"] = round(figures[name]["cpu_ms_per_request"] / off_cpu, 3)
    s5, s100 = figures["shadow_5"], figures["shadow_100"]
    figures["claims"] = [
        claim("client p50 latency, shadowing 5 % vs off, interleaved requests (ratio)",
              s5["p50_ratio_vs_off"], "<= 1.05", s5["p50_ratio_vs_off"] <= 1.05),
        claim("process CPU per request, shadowing 5 % vs off (ratio; includes the shadow calls)",
              s5["cpu_ratio_vs_off"], None, None),
        claim("process CPU per request, shadowing every request vs off (ratio)",
              s100["cpu_ratio_vs_off"], None, None),
    ]
    write_result("monitor_overhead", figures)
    for c in figures["claims"]:
        print(f"  {c['figure']}: {c['value']} (target {c['target']}, met {c['met']})")


if __name__ == "__main__":
    main()
