"""Claim: the gateway adds little latency and CPU over calling the back end directly, and its
direct pooled HTTP path is cheaper than going through litellm.

Same run, same fake OpenAI-compatible back end (a real HTTP server on 127.0.0.1), sequential
requests from one httpx client:
  direct        client -> back end
  gateway_http  client -> gateway (direct pooled httpx path, `openai/` + api_base) -> back end
  gateway_http_routed  the same with `kdroute/auto@1`: the default heuristic router scores it
  gateway_litellm  client -> gateway (litellm path, `deepseek/` + api_base) -> back end
Reported: p50/p95 latency, process CPU per request, and the gateway's overhead against direct.
Everything (client, gateway, back end) shares this process, so CPU differences are the gateway's.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from common import write_result

N = 300
WARMUP = 30
BODY = {"messages": [{"role": "user", "content": "say hi"}], "max_tokens": 8}


def measure(url: str, model: str, headers: dict) -> dict:
    import httpx

    with httpx.Client(timeout=30) as client:
        for _ in range(WARMUP):
            client.post(url, json=dict(BODY, model=model), headers=headers).raise_for_status()
        latencies = []
        cpu0 = time.process_time()
        for _ in range(N):
            t0 = time.perf_counter()
            client.post(url, json=dict(BODY, model=model), headers=headers).raise_for_status()
            latencies.append((time.perf_counter() - t0) * 1000)
        cpu = (time.process_time() - cpu0) * 1000 / N
    latencies.sort()
    return {"p50_ms": round(statistics.median(latencies), 3),
            "p95_ms": round(latencies[int(0.95 * N)], 3), "cpu_ms_per_request": round(cpu, 3)}


def main() -> None:
    import os

    from kdroute.config import Settings
    from kdroute.gateway import create_app
    from kdroute.testing.fake_openai import AppServer, FakeOpenAI

    os.environ["KDBENCH_PROVIDER_KEY"] = "sk-bench-provider-0000000000"
    figures: dict = {"requests": N}
    with FakeOpenAI("backend") as backend, tempfile.TemporaryDirectory() as tmp:
        figures["direct"] = measure(backend.url + "/chat/completions", "m", {})
        settings = Settings.model_validate({
            "teacher": {"model": "deepseek/deepseek-chat", "api_base": backend.url,
                        "api_key_env": "KDBENCH_PROVIDER_KEY", "input_price_per_1m": 5.0,
                        "output_price_per_1m": 15.0},
            "student": {"model": "openai/small", "api_base": backend.url,
                        "input_price_per_1m": 0.1, "output_price_per_1m": 0.3},
            "store": {"path": str(Path(tmp) / "ledger.db")},
            # the request path alone: shadow calls are background work (bench_monitor_overhead)
            "monitor": {"shadow_rate": 0.0}})
        with AppServer(create_app(settings, env={})) as gateway:
            url = gateway.url + "/v1/chat/completions"
            figures["gateway_http"] = measure(url, "kdroute/student", {})
            figures["gateway_http_routed"] = measure(url, "kdroute/auto@1", {})  # + heuristic
            figures["gateway_litellm"] = measure(url, "kdroute/teacher", {})
    direct = figures["direct"]
    for path in ("gateway_http", "gateway_http_routed", "gateway_litellm"):
        f = figures[path]
        f["overhead_p50_ms"] = round(f["p50_ms"] - direct["p50_ms"], 3)
        f["overhead_cpu_ms"] = round(f["cpu_ms_per_request"] - direct["cpu_ms_per_request"], 3)
        f["p50_ratio_vs_direct"] = round(f["p50_ms"] / direct["p50_ms"], 2)
    figures["litellm_over_http_cpu_ratio"] = round(
        figures["gateway_litellm"]["overhead_cpu_ms"]
        / max(figures["gateway_http"]["overhead_cpu_ms"], 1e-6), 2)
    write_result("gateway_overhead", figures)
    print(figures)


if __name__ == "__main__":
    main()
