"""The gateway's pure parts: the route grammar, retry policy, prices and costs, redaction."""

import asyncio

import pytest

from kdroute.config import ModelConfig
from kdroute.errors import ConfigError
from kdroute.gateway.backends import RetryPolicy, parse_retry_after, with_retries
from kdroute.gateway.costing import Prices, cost_usd, resolve_prices
from kdroute.gateway.errors import UpstreamError
from kdroute.gateway.protocol import GatewayError
from kdroute.gateway.records import REDACTED, RequestRecord, key_id, redact
from kdroute.gateway.routing import RouteChoice, choose_route, parse_route


@pytest.mark.parametrize("value, expected", [
    ("kdroute/auto", RouteChoice("auto")),
    ("kdroute/teacher", RouteChoice("teacher")),
    ("kdroute/student", RouteChoice("student")),
    ("kdroute/auto@0.35", RouteChoice("auto", 0.35)),
    ("kdroute/auto@0", RouteChoice("auto", 0.0)),
    ("auto@1", RouteChoice("auto", 1.0)),
])
def test_parse_route(value, expected):
    assert parse_route(value) == expected


@pytest.mark.parametrize("value, status", [
    ("gpt-4o", 404), ("kdroute/oracle", 404), ("kdroute/student@0.2", 404),
    ("kdroute/auto@", 400), ("kdroute/auto@-0.1", 400), ("kdroute/auto@nan", 400),
    ("kdroute/auto@2", 400),
])
def test_parse_route_rejects(value, status):
    with pytest.raises(GatewayError) as info:
        parse_route(value)
    assert info.value.status == status and info.value.param == "model"


def test_header_wins_over_the_model_field():
    assert choose_route("kdroute/teacher", "kdroute/auto@0.2") == RouteChoice("auto", 0.2)
    assert choose_route("kdroute/teacher", "  ") == RouteChoice("teacher")
    with pytest.raises(GatewayError) as info:
        choose_route("kdroute/auto", "nope")
    assert info.value.param == "x-kdroute-route"


def test_retry_policy():
    policy = RetryPolicy(max_retries=3, backoff_s=0.1, max_wait_s=5)
    assert policy.delay(0, retry_after=2.0) == 2.0
    assert policy.delay(0, retry_after=6.0) is None  # beyond the bound: give up at once
    for attempt in range(4):  # exponential with jitter in [0.5, 1.5) x base, capped
        base = 0.1 * 2**attempt
        assert 0.5 * base <= policy.delay(attempt, None) < 1.5 * base
    assert RetryPolicy(5, backoff_s=10, max_wait_s=1).delay(3, None) == 1
    assert parse_retry_after("3") == 3.0 and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past


@pytest.mark.parametrize("errors, calls, raised", [
    ([UpstreamError(429, "x", retry_after=0)] * 2, 3, False),
    ([UpstreamError(503, "x"), UpstreamError(None, "refused")], 3, False),
    ([UpstreamError(400, "bad")], 1, True),
    ([UpstreamError(None, "slow", timeout=True)], 1, True),
    ([UpstreamError(500, "x")] * 5, 3, True),  # max_retries=2: three calls, then the error
])
def test_with_retries(errors, calls, raised):
    made = []

    async def call():
        made.append(1)
        if len(made) <= len(errors):
            raise errors[len(made) - 1]
        return "ok"

    run = with_retries(call, RetryPolicy(max_retries=2, backoff_s=0.0))
    if raised:
        with pytest.raises(UpstreamError):
            asyncio.run(run)
    else:
        assert asyncio.run(run) == "ok"
    assert len(made) == calls


def test_costs():
    prices = Prices(2.5, 10.0)
    assert cost_usd(prices, 1_000_000, 0) == 2.5
    assert cost_usd(prices, 0, 1_000_000) == 10.0
    assert cost_usd(prices, 400, 100) == pytest.approx((400 * 2.5 + 100 * 10.0) / 1e6)
    assert resolve_prices("teacher", ModelConfig(model="hf:x", input_price_per_1m=1,
                                                 output_price_per_1m=2)) == Prices(1, 2)


def test_prices_fall_back_to_litellm_or_stop_with_the_key_to_set():
    import litellm

    found = resolve_prices("teacher", ModelConfig(model="openai/gpt-4o-mini"))
    info = litellm.model_cost["gpt-4o-mini"]
    assert found.source == "litellm"
    assert found.input_per_1m == pytest.approx(info["input_cost_per_token"] * 1e6)
    partial = resolve_prices("teacher", ModelConfig(model="openai/gpt-4o-mini",
                                                    output_price_per_1m=9.0))
    assert partial.output_per_1m == 9.0 and partial.input_per_1m == found.input_per_1m
    with pytest.raises(ConfigError, match=r"student\.input_price_per_1m"):
        resolve_prices("student", ModelConfig(model="hosted_vllm/my-own-model"))
    with pytest.raises(ConfigError):
        resolve_prices("student", ModelConfig(model="hf:models/x"))


def test_redaction_and_key_ids():
    secret = "my-very-own-secret"
    text = (f"use sk-abcdefghijklmnop and Authorization: Bearer eyJhbGciOi.x.y, "
            f'"api_key": "abc123def", {secret}')
    clean = redact(text, (secret,))
    for leaked in ("sk-abcdefghijklmnop", "eyJhbGciOi", "abc123def", secret):
        assert leaked not in clean
    assert clean.count(REDACTED) == 4
    assert redact("nothing to hide here") == "nothing to hide here"
    assert key_id("sk-a") == key_id("sk-a") != key_id("sk-b") and len(key_id("sk-a")) == 12


def test_record_row_stores_text_only_when_asked():
    record = RequestRecord(id="r1", endpoint="chat", response_text="answer sk-abcdefghijkl",
                           conversation=[{"role": "user", "content": "hi Bearer tok123"}])
    assert record.row(store_text=False)["prompt_text"] is None
    assert record.row(store_text=False)["response_text"] is None
    row = record.row(store_text=True)
    assert row["prompt_text"] == f"user: hi Bearer {REDACTED}"
    assert row["response_text"] == f"answer {REDACTED}"
    assert "conversation" not in row and row["fallback"] == 0


@pytest.mark.parametrize("pieces, stop, expected", [
    (["Hel", "lo ", "wor", "ld"], ["lo w"], "Hel"),           # a stop string split over pieces
    (["ab", "c", "d"], "cd", "ab"),                          # a single string, as OpenAI allows
    (["abc", "d"], ["x", "bc"], "a"),                        # the earliest of several
    (["the e", "nd"], ["ENDX", "e nx"], "the end"),          # held-back prefixes released
    (["plain"], None, "plain"),
])
def test_stop_trimmer_streams_text_up_to_the_first_stop_string(pieces, stop, expected):
    from kdroute.gateway.local import StopTrimmer

    trim = StopTrimmer(stop)
    out = "".join(trim.feed(p) for p in pieces) + trim.flush()
    assert out == expected
    if stop is not None and expected != "".join(pieces):
        assert trim.done and trim.feed("more") == ""  # nothing is sent after a stop string
