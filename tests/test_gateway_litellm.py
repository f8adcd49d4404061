"""The litellm side of the gateway: litellm as a client of the gateway, litellm as the provider
layer behind it (prices from its cost map), and a local Hugging Face model served in-process
through kdroute's litellm custom provider."""

import httpx
import openai
import pytest
from fake_openai import AppServer, FakeOpenAI
from gateway_fixtures import EASY, HARD, KEYS, STUDENT, KeywordRouter

from kdroute.config import Settings

PROVIDER_KEY = "sk-provider-deepseek-0123456789"


def settings_for(tmp_path, teacher: dict, student: dict, **gateway) -> Settings:
    return Settings.model_validate({
        "teacher": teacher, "student": student, "store": {"path": str(tmp_path / "ledger.db")},
        "gateway": {"retry_backoff_s": 0.01, "writer_flush_interval_s": 0.05, **gateway},
        "monitor": {"shadow_rate": 0.0}})  # these tests count back-end calls: no shadow calls


def rows(tmp_path) -> list[dict]:
    from kdroute.store import Store

    with Store(tmp_path / "ledger.db") as store:
        return list(store.db["requests"].rows_where(order_by="ts"))


@pytest.fixture
def litellm_gateway(tmp_path, monkeypatch):
    """Teacher `deepseek/deepseek-chat` (a litellm provider, no prices in config) in front of a
    fake server; student on the direct HTTP path."""
    monkeypatch.setenv("KDTEST_DEEPSEEK_KEY", PROVIDER_KEY)
    from kdroute.gateway import create_app

    with FakeOpenAI("deepseek") as teacher, FakeOpenAI("student") as student:
        settings = settings_for(
            tmp_path,
            {"model": "deepseek/deepseek-chat", "api_base": teacher.url,
             "api_key_env": "KDTEST_DEEPSEEK_KEY", "max_retries": 2, "timeout_s": 5},
            dict(STUDENT, api_base=student.url), store_text=True)
        app = create_app(settings, router=KeywordRouter(),
                         env={"KDROUTE_API_KEYS": KEYS[0]})
        with AppServer(app) as server:
            yield server, teacher, app


def test_litellm_backend_with_cost_map_prices_retries_and_streaming(litellm_gateway, tmp_path):
    import litellm

    server, teacher, app = litellm_gateway
    info = litellm.model_cost["deepseek/deepseek-chat"]
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEYS[0], max_retries=0)
    answer = client.chat.completions.create(model="kdroute/auto", messages=HARD)
    assert answer.choices[0].message.content == "hello from the fake model"
    assert answer.model == "deepseek/deepseek-chat"
    call = teacher.completion_calls()[-1]
    assert call.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    teacher.set(fail_next=2, fail_status=503)
    client.chat.completions.create(model="kdroute/teacher", messages=EASY)
    assert len(teacher.completion_calls()) == 1 + 3  # retried twice through litellm
    teacher.set(fail_next=1, fail_status=400)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="kdroute/teacher", messages=EASY)
    assert len(teacher.completion_calls()) == 1 + 3 + 1  # never on 400
    stream = client.chat.completions.create(model="kdroute/teacher", messages=EASY, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) \
        == "hello from the fake model"
    app.state.gateway.writer.close()
    ledger = rows(tmp_path)
    first = ledger[0]
    expected = 100 * info["input_cost_per_token"] + 50 * info["output_cost_per_token"]
    assert first["cost_usd"] == first["teacher_cost_usd"] == pytest.approx(expected, rel=1e-9)
    assert [r["status"] for r in ledger] == [200, 200, 400, 200]
    raw = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())  # + spool
    assert PROVIDER_KEY.encode() not in raw and KEYS[0].encode() not in raw


def test_litellm_completion_as_a_client_of_the_gateway(litellm_gateway):
    import litellm

    server, teacher, _ = litellm_gateway
    response = litellm.completion(model="openai/kdroute/auto", messages=HARD,
                                  api_base=server.url + "/v1", api_key=KEYS[0], num_retries=0)
    assert response.choices[0].message.content == "hello from the fake model"
    assert response.usage.prompt_tokens == 100
    chunks = litellm.completion(model="openai/kdroute/student", messages=EASY, stream=True,
                                api_base=server.url + "/v1", api_key=KEYS[0])
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "hello from the fake model"
    with pytest.raises(litellm.AuthenticationError):
        litellm.completion(model="openai/kdroute/auto", messages=EASY, num_retries=0,
                           api_base=server.url + "/v1", api_key="sk-wrong-000000000000")


def test_local_hf_student_served_in_process(tmp_path):
    from kdroute.gateway import create_app
    from kdroute.tinymodels import save_tiny_model

    model_dir = save_tiny_model(tmp_path / "student", n_layer=1, n_embd=32, n_positions=128)
    with FakeOpenAI("teacher") as teacher:
        settings = settings_for(
            tmp_path, {"model": "openai/big", "api_base": teacher.url,
                       "input_price_per_1m": 5.0, "output_price_per_1m": 15.0},
            {"model": f"hf:{model_dir}", "input_price_per_1m": 0.1, "output_price_per_1m": 0.3})
        app = create_app(settings, router=KeywordRouter(), env={})
        with AppServer(app) as server:
            assert httpx.get(server.url + "/ready").json()["backends"]["student"] is True
            client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
            answer = client.chat.completions.create(model="kdroute/auto", messages=EASY,
                                                    max_tokens=6)
            assert answer.model == f"hf:{model_dir}"
            assert answer.usage.completion_tokens == 6 and answer.usage.prompt_tokens > 0
            text = answer.choices[0].message.content
            chunks = list(client.chat.completions.create(
                model="kdroute/student", messages=EASY, max_tokens=6, stream=True,
                stream_options={"include_usage": True}))
            streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert streamed == text  # greedy decoding: the same answer either way
            assert chunks[-1].usage.completion_tokens == 6
            # a stop sequence is cut from the answer, streamed or not, with nothing after it
            stop = text[len(text) // 2]
            expected = text[: text.index(stop)]
            cut = client.chat.completions.create(model="kdroute/student", messages=EASY,
                                                 max_tokens=6, stop=[stop])
            assert cut.choices[0].message.content == expected
            cut_stream = client.chat.completions.create(model="kdroute/student", messages=EASY,
                                                        max_tokens=6, stop=[stop], stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in cut_stream
                           if c.choices) == expected
            done = client.completions.create(model="kdroute/student", prompt="hi", max_tokens=3)
            assert done.usage.completion_tokens == 3
            assert teacher.completion_calls() == []
        ledger = rows(tmp_path)
    assert [r["served_role"] for r in ledger] == ["student"] * 5
    assert ledger[0]["prompt_tokens"] == answer.usage.prompt_tokens
    assert ledger[0]["cost_usd"] == pytest.approx(
        (answer.usage.prompt_tokens * 0.1 + 6 * 0.3) / 1e6, rel=1e-12)
