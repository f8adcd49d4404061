import subprocess
import sys
import tomllib

import pytest

from kdroute.config import Settings, load_config
from kdroute.errors import ConfigError
from tests.conftest import REPO


def write(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_embedded_default_equals_builtin_defaults_but_the_demo_router():
    """config.toml is the built-in defaults plus one thing only it can know: the learned router
    of the embedded demo pair (a user's own config has no such file, so the built-in is unset)."""
    from_file = load_config(REPO / "config.toml", env={}).model_dump()
    builtin = Settings().model_dump()
    assert builtin["router"]["artifact"] is None
    assert from_file["router"].pop("artifact") == "routers/demo.json"
    builtin["router"].pop("artifact")
    assert from_file == builtin


def test_the_embedded_router_is_fit_for_the_embedded_pair():
    import json

    from kdroute.fingerprint import model_fingerprint

    artifact = json.loads((REPO / "routers" / "demo.json").read_text())
    assert artifact["teacher"] == model_fingerprint(REPO / "models" / "demo-teacher")
    assert artifact["student"] == model_fingerprint(REPO / "models" / "demo-student")
    assert (REPO / "routers" / artifact["arrays"]).is_file()


def test_every_builtin_key_is_in_config_toml():
    data = tomllib.loads((REPO / "config.toml").read_text())
    optional = {("teacher", "api_base"), ("teacher", "api_key_env"), ("student", "api_base"),
                ("student", "api_key_env"), ("bench", "limit"),
                ("monitor", "judge")}
    text = (REPO / "config.toml").read_text()
    for section, model in Settings().model_dump().items():
        for key in model:
            if (section, key) in optional:
                assert f"# {key} =" in text, f"{section}.{key} undocumented"
            else:
                assert key in data[section], f"{section}.{key} missing from config.toml"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[gateway]\nport = "high"\n', "gateway.port: input should be a valid integer"),
        ("[gateway]\nprot = 80\n", "gateway.prot: unknown key; valid keys here: host, port"),
        ("[monitor]\nshadow_rate = 1.5\n", "monitor.shadow_rate: input should be less than"),
        ("[gateway]\nport = 70000\n", "gateway.port: input should be less than or equal to 65535"),
        ("[nonsense]\nx = 1\n", "nonsense: unknown key"),
    ],
)
def test_bad_values_give_one_line_naming_file_and_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert message.startswith(str(path)) and expected in message and "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", env={})


def test_env_overrides_single_keys(tmp_path):
    path = write(tmp_path, "[gateway]\nport = 9000\n")
    env = {"KDROUTE_GATEWAY_PORT": "9100", "KDROUTE_MONITOR_SHADOW_RATE": "0.25",
           "KDROUTE_BENCH_TASKS": '["a", "b"]', "KDROUTE_GATEWAY_STORE_TEXT": "true",
           "KDROUTE_API_KEYS": "not-a-section"}
    settings = load_config(path, env=env)
    assert settings.gateway.port == 9100
    assert settings.monitor.shadow_rate == 0.25
    assert settings.bench.tasks == ["a", "b"]
    assert settings.gateway.store_text is True
    assert settings.gateway.host == "127.0.0.1"  # untouched keys keep their defaults


def test_env_override_error_names_the_variable(tmp_path):
    with pytest.raises(ConfigError, match="KDROUTE_MONITOR_WINDOW .*monitor.window"):
        load_config(write(tmp_path, ""), env={"KDROUTE_MONITOR_WINDOW": "3"})


def test_relative_paths_resolve_against_config_folder(tmp_path):
    settings = load_config(write(tmp_path, '[store]\npath = "sub/l.db"\n'), env={})
    assert settings.path(settings.store.path) == tmp_path / "sub" / "l.db"


@pytest.mark.parametrize(
    "text", ['[gateway]\nport = "x"\n', "[gateway]\nprot = 1\n", "[monitor]\nwindow = -1\n"]
)
def test_cli_exits_2_with_one_line(tmp_path, text):
    path = write(tmp_path, text)
    proc = subprocess.run([sys.executable, "-m", "kdroute", "--config", str(path), "db", "path"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}:")
    assert "Traceback" not in proc.stderr


def test_cli_missing_config_file_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "kdroute", "--config", str(tmp_path / "x.toml"),
                           "db", "stats"], capture_output=True, text=True)
    assert proc.returncode == 2 and "config file not found" in proc.stderr
