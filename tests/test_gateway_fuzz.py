"""Fuzzing the request schema over real HTTP (issue 13): hypothesis generates bodies, near-valid
and not, for both endpoints. Whatever arrives, the gateway never answers 5xx (the fake back ends
are healthy), and every error is OpenAI-shaped with a request id. Sized to run in seconds."""

import json

import gateway_fixtures as fx
import httpx
from gateway_fixtures import KEYS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdroute.gateway.protocol import CLIENT_FIELDS

fakes, gw, _reset_fakes = fx.fakes, fx.gw, fx._reset_fakes  # this module's fixtures
AUTH = {"authorization": f"Bearer {KEYS[0]}", "content-type": "application/json"}
FUZZ = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# Text with lone surrogates too; floats with NaN and Infinity (json.dumps writes them as bare
# NaN / Infinity, which is not JSON): both gave 500s before issue 13.
texts = st.text(max_size=12) | st.sampled_from(["hi \ud800", "\udfff", "a\ud83d"])
scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | texts)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                           max_leaves=12)
models = st.sampled_from(["kdroute/auto", "kdroute/teacher", "kdroute/student",
                          "kdroute/auto@0.3", "kdroute/auto@7", "gpt-4o", ""]) | st.text(max_size=20)
parts = st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", ""])},
                                       optional={"text": json_values}), max_size=2)
messages = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", "wizard"])},
    optional={"content": st.text(max_size=30) | parts | json_values}), max_size=3)
fields = sorted(CLIENT_FIELDS["chat"] | CLIENT_FIELDS["completions"] | {"api_base", "bogus"})
bodies = st.fixed_dictionaries(
    {"model": models},
    optional={"messages": messages | json_values, "prompt": st.text(max_size=20) | json_values,
              "stream": st.booleans() | json_values, "max_tokens": st.integers(-3, 50) | json_values,
              "temperature": st.floats(-1, 3) | json_values,
              "stream_options": st.just({"include_usage": True}) | json_values,
              **{f: json_values for f in fields if f not in ("model", "messages", "prompt")}})


def check(resp: httpx.Response) -> None:
    assert resp.status_code < 500, resp.text
    assert resp.headers.get("x-kdroute-request-id")
    if resp.status_code != 200:
        body = resp.json()
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param",
                                                                  "code"}


@FUZZ
@given(body=bodies, completions=st.booleans())
def test_generated_bodies_never_give_5xx(gw, body, completions):
    path = "/v1/completions" if completions else "/v1/chat/completions"
    with httpx.Client(timeout=30) as client:
        resp = client.post(gw.url + path, content=json.dumps(body).encode(), headers=AUTH)
        check(resp)


@FUZZ
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_never_give_5xx(gw, raw):
    with httpx.Client(timeout=30) as client:
        check(client.post(gw.url + "/v1/chat/completions", content=raw, headers=AUTH))
