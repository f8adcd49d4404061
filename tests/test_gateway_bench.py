"""The routed system benchmarked as a model: `kdroute bench --system-endpoint` runs lm-eval's
local-chat-completions against the gateway, which serves two tiny local models in-process."""

import sys

from conftest import REPO
from fake_openai import AppServer
from gateway_fixtures import KeywordRouter

from kdroute.cli import main
from kdroute.config import load_config
from kdroute.store import Store
from kdroute.tinymodels import save_tiny_model

LIMIT = 4
KEY = "sk-bench-client-key-0123456789"


def test_kdroute_bench_evaluates_the_gateway(tmp_path, monkeypatch, capsys):
    from kdroute.gateway import create_app

    for name, seed in (("teacher", 0), ("student", 1)):
        save_tiny_model(tmp_path / name, seed=seed, n_layer=1, n_head=2, n_embd=32)
    config = tmp_path / "config.toml"
    config.write_text(
        '[teacher]\nmodel = "hf:teacher"\ninput_price_per_1m = 5.0\noutput_price_per_1m = 15.0\n'
        '[student]\nmodel = "hf:student"\ninput_price_per_1m = 0.1\noutput_price_per_1m = 0.3\n'
        '[store]\npath = "ledger.db"\n[gateway]\nwriter_flush_interval_s = 0.05\n'
        '[monitor]\nshadow_rate = 0.0\n'
        f'[bench]\ninclude_path = "{REPO / "evalsets"}"\nlimit = {LIMIT}\noutput_dir = "runs"\n'
        'batch_size = 4\ndevice = "cpu"\n')
    settings = load_config(config, env={})
    # Arithmetic with a "+" goes to the teacher, the rest to the student (a keyword router).
    router = KeywordRouter()
    router.score_one = lambda conversation: 0.9 if "+" in conversation[-1]["content"] else 0.1
    app = create_app(settings, router=router, env={"KDROUTE_API_KEYS": KEY})
    monkeypatch.setenv("KDTEST_GATEWAY_KEY", KEY)
    with AppServer(app) as server:
        monkeypatch.setattr(sys, "argv", [
            "kdroute", "--config", str(config), "bench", "--tasks", "kdroute_arith",
            "--no-speed", "--system-endpoint", server.url + "/v1", "--api-key-env",
            "KDTEST_GATEWAY_KEY"])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code
    out = capsys.readouterr()
    assert code in (0, None), out.err
    with Store(tmp_path / "ledger.db") as store:
        system = store.frame("SELECT * FROM bench_results WHERE role = 'system'")
        requests = store.frame("SELECT * FROM requests")
    assert set(system["task"]) == {"kdroute_arith"} and (system["n"] == LIMIT).all()
    # Every lm-eval request went through the gateway, was routed, costed and logged.
    assert len(requests) == LIMIT and (requests["status"] == 200).all()
    assert set(requests["requested_model"]) == {"kdroute/auto"}
    assert (requests["route_reason"] == "router").all()
    plus = requests["router_score"] > 0.5
    assert (requests.loc[plus, "served_role"] == "teacher").all()
    assert (requests.loc[~plus, "served_role"] == "student").all()
    assert (requests["teacher_cost_usd"] >= requests["cost_usd"]).all()
