"""Typed configuration, validated once at load.

`config.toml` at the project root is the embedded default; every key is documented there. The
defaults below equal that file, so kdroute also runs from any directory without one. Environment
variables `KDROUTE_<SECTION>_<KEY>` override single keys (values are parsed like TOML scalars, or
JSON for lists). Any problem raises `ConfigError` with one line naming the file, the key and what is
expected.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kdroute.errors import ConfigError

ENV_PREFIX = "KDROUTE_"
# The one list of each choice: distill's job check, losses and CLI help read them with get_args.
Divergence = Literal["forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl", "tvd"]
TeacherMode = Literal["live", "cached", "sequence"]
DEFAULT_CONFIG_NAME = "config.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    """A teacher or student: a litellm model string or `hf:<local directory>`, and its prices."""

    model: str = Field(min_length=1)
    input_price_per_1m: float | None = Field(default=None, ge=0)
    output_price_per_1m: float | None = Field(default=None, ge=0)
    api_base: str | None = None
    api_key_env: str | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)

    @property
    def is_local(self) -> bool:
        return self.model.startswith("hf:")


class StoreConfig(_Section):
    path: str = "kdroute.db"
    busy_timeout_ms: int = Field(default=5000, ge=0)


class RouterConfig(_Section):
    artifact: str | None = None
    scorer: str = "heuristic"
    threshold: float = Field(default=0.5, ge=0, le=1)
    label_rule: Literal["teacher_right_student_wrong", "student_wrong", "score_gap",
                        "expected_gain"] = "expected_gain"
    label_delta: float = Field(default=0.0, ge=0, le=1)
    calibration_target: Literal["teacher_share", "quality_floor", "cost_budget"] = "teacher_share"
    calibration_value: float = Field(default=0.3, ge=0)
    cache_size: int = Field(default=10000, ge=0)

    @field_validator("scorer")
    @classmethod
    def _known_scorer(cls, value: str) -> str:
        # The registry is the one list of names; imported here (numpy only) so that a typo fails
        # at load, not when the gateway starts.
        from kdroute.route.registry import EVAL_ONLY, SCORER_CLS

        if value not in SCORER_CLS:
            raise ValueError(f"unknown scorer; use one of {', '.join(SCORER_CLS)}")
        if value in EVAL_ONLY:
            raise ValueError("an evaluation baseline, not a router; use heuristic or a trained "
                             "router.artifact")
        return value


class GatewayConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    api_keys_env: str = "KDROUTE_API_KEYS"
    allow_public_without_key: bool = False
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    request_timeout_s: float = Field(default=120.0, gt=0)
    retry_max_wait_s: float = Field(default=10.0, ge=0)
    retry_backoff_s: float = Field(default=0.25, ge=0)
    store_text: bool = False
    writer_queue_size: int = Field(default=10000, ge=1)
    writer_batch_size: int = Field(default=200, ge=1)
    writer_flush_interval_s: float = Field(default=0.5, gt=0)
    spool: bool = True
    loopback_probes_without_key: bool = False
    extra_body_fields: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]] = \
        Field(default_factory=list)
    access_log: bool = False
    keep_alive_s: float = Field(default=75.0, gt=0)


AGREEMENT_TIERS = ("answer", "embedding", "judge")


class MonitorConfig(_Section):
    """Shadow evaluation, drift alerts and the quality breaker (kdroute/monitor)."""

    shadow_rate: float = Field(default=0.05, ge=0, le=1)
    shadow_near_band: float = Field(default=0.1, ge=0, le=1)
    shadow_near_boost: float = Field(default=3.0, ge=1, le=100)
    shadow_queue_size: int = Field(default=1000, ge=1)
    shadow_concurrency: int = Field(default=4, ge=1, le=256)
    shadow_budget_usd: float = Field(default=10.0, gt=0)
    shadow_max_tokens: int = Field(default=512, ge=1)
    store_pairs: bool = False
    agreement_method: str = "answer+embedding"
    embedding_threshold: float = Field(default=0.962, ge=-1, le=1)
    judge_band: float = Field(default=0.05, ge=0, le=2)
    judge: ModelConfig | None = None
    agreement_floor: float = Field(default=0.8, ge=0, le=1)
    slice_floors: dict[str, float] = Field(default_factory=dict)  # e.g. {"family:arith" = 0.3}
    window: int = Field(default=200, ge=10)
    min_samples: int = Field(default=50, ge=1)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    decay_margin: float = Field(default=0.05, gt=0, lt=1)
    decay_arl: float = Field(default=50000.0, ge=100)
    score_buckets: int = Field(default=4, ge=0, le=20)  # 0: no router-score slices
    family_slices: bool = True
    drift_window: int = Field(default=500, ge=50)
    psi_alert: float = Field(default=0.25, gt=0)
    teacher_share_tolerance: float = Field(default=0.15, gt=0, le=1)
    breaker: bool = True
    probe_rate: float = Field(default=0.1, gt=0, le=1)
    poll_interval_s: float = Field(default=1.0, gt=0, le=60)
    webhook_url: str = ""
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    webhook_retries: int = Field(default=3, ge=0, le=10)

    @field_validator("agreement_method")
    @classmethod
    def _tiers(cls, value: str) -> str:
        tiers = [t.strip() for t in value.split("+")]
        unknown = [t for t in tiers if t not in AGREEMENT_TIERS]
        if unknown or not tiers:
            raise ValueError(f"unknown agreement tier {unknown[0]!r}; use tiers from "
                             f"{', '.join(AGREEMENT_TIERS)} joined by '+', in that order, "
                             f"e.g. 'answer+embedding'")
        if len(set(tiers)) != len(tiers) or tiers != sorted(tiers, key=AGREEMENT_TIERS.index):
            raise ValueError("agreement tiers must appear once each, cheapest first "
                             "(answer, embedding, judge), e.g. 'answer+embedding+judge'")
        return "+".join(tiers)

    @field_validator("slice_floors")
    @classmethod
    def _slice_floors(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [k for k, v in value.items() if not 0 <= v <= 1]
        if bad:
            raise ValueError(f"the floor of slice {bad[0]!r} must be between 0 and 1")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook(cls, value: str) -> str:
        from urllib.parse import urlsplit

        value = value.strip()
        if not value:
            return value
        try:
            parts = urlsplit(value)
            port_ok = parts.port is None or parts.port > 0
        except ValueError:
            parts, port_ok = None, False
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname \
                or not port_ok:
            raise ValueError("must be an http(s) URL such as https://hooks.example.com/kdroute "
                             "(or empty for no webhook)")
        return value

    @property
    def tiers(self) -> tuple[str, ...]:
        return tuple(self.agreement_method.split("+"))


class DistillConfig(_Section):
    data: str = "evalsets/data/train.jsonl"
    output_dir: str = "runs/distill"
    teacher_mode: TeacherMode = "live"
    loss: Divergence = "forward_kl"
    kd_temperature: float = Field(default=2.0, gt=0)
    alpha_ce: float = Field(default=0.5, ge=0)
    alpha_kd: float = Field(default=0.5, ge=0)
    jsd_beta: float = Field(default=0.5, ge=0, le=1)
    skew_alpha: float = Field(default=0.1, ge=0, le=1)
    hidden_weight: float = Field(default=0.0, ge=0)
    attention_weight: float = Field(default=0.0, ge=0)
    top_k: int = Field(default=64, ge=1)
    steps: int = Field(default=2000, ge=1)
    batch_size: int = Field(default=32, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    warmup_steps: int = Field(default=100, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    seed: int = 0
    checkpoint_every: int = Field(default=500, ge=1)
    eval_every: int = Field(default=250, ge=1)
    train_examples: int = Field(default=0, ge=0)  # 0 = all rows


class BenchConfig(_Section):
    tasks: list[str] = Field(default_factory=lambda: ["kdroute_skills"], min_length=1)
    include_path: str | None = "evalsets"
    limit: int | None = Field(default=None, ge=1)
    num_fewshot: int = Field(default=0, ge=0)
    batch_size: int = Field(default=16, ge=1)
    min_retention: float = Field(default=0.9, ge=0, le=1)
    gate_on: Literal["each", "mean"] = "each"
    output_dir: str = "runs/bench"
    device: str = "auto"
    speed_prompts: int = Field(default=16, ge=1)
    speed_new_tokens: int = Field(default=24, ge=1)


class Settings(_Section):
    teacher: ModelConfig = Field(
        default_factory=lambda: ModelConfig(
            model="hf:models/demo-teacher", input_price_per_1m=5.0, output_price_per_1m=15.0
        )
    )
    student: ModelConfig = Field(
        default_factory=lambda: ModelConfig(
            model="hf:models/demo-student", input_price_per_1m=0.1, output_price_per_1m=0.3
        )
    )
    store: StoreConfig = Field(default_factory=StoreConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    bench: BenchConfig = Field(default_factory=BenchConfig)

    # Where the file came from; relative paths in it resolve against its folder.
    source: str = Field(default="<defaults>", exclude=True)
    base_dir: str = Field(default=".", exclude=True)

    def path(self, value: str | os.PathLike) -> Path:
        """Resolve a path from the config relative to the config file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    def model_path(self, ref: str) -> Path:
        """The local directory of an `hf:` model reference."""
        return self.path(ref.removeprefix("hf:"))


SECTIONS = tuple(name for name in Settings.model_fields if name not in ("source", "base_dir"))


def default_config_path() -> Path | None:
    """`$KDROUTE_CONFIG`, else `./config.toml` if present, else None (built-in defaults)."""
    if env := os.environ.get("KDROUTE_CONFIG"):
        return Path(env)
    local = Path.cwd() / DEFAULT_CONFIG_NAME
    return local if local.is_file() else None


def load_config(
    path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Read, merge environment overrides into, and validate the configuration."""
    env = os.environ if env is None else env
    if path is None:
        path = default_config_path()
    data: dict[str, Any] = {}
    source = "<defaults>"
    base_dir = Path.cwd()
    if path is not None:
        file = Path(path)
        source = str(file)
        if not file.is_file():
            raise ConfigError(f"{file}: config file not found (omit --config to use the defaults)")
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: invalid TOML: {exc}") from None
        base_dir = file.resolve().parent
    overridden = _apply_env_overrides(data, env)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, overridden)) from None
    settings.source = source
    settings.base_dir = str(base_dir)
    return settings


def _apply_env_overrides(data: dict[str, Any], env: Mapping[str, str]) -> dict[tuple, str]:
    """Merge KDROUTE_<SECTION>_<KEY> variables into `data`; return {(section, key): var}."""
    overridden: dict[tuple, str] = {}
    for var, raw in env.items():
        if not var.startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        section = next((s for s in SECTIONS if rest.startswith(s + "_")), None)
        if section is None:  # KDROUTE_CONFIG, KDROUTE_API_KEYS and other non-override names
            continue
        key = rest[len(section) + 1 :]
        target = data.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"{var}: [{section}] in the config file is not a table")
        target[key] = _parse_env_value(raw)
        overridden[(section, key)] = var
    return overridden


def _parse_env_value(raw: str) -> Any:
    text = raw.strip()
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return raw
    return raw  # pydantic's lax mode turns "8080", "0.3", "true" into the declared type


def _describe(exc: ValidationError, source: str, overridden: dict[tuple, str]) -> str:
    """One line for the first validation error: file, dotted key, what is expected."""
    err = exc.errors()[0]
    loc = tuple(str(part) for part in err["loc"])
    key = ".".join(loc)
    where = source
    if loc[:2] in overridden:
        where = f"{overridden[loc[:2]]} (environment override of {key})"
    if err["type"] == "extra_forbidden":
        valid = _valid_keys(loc[:-1])
        return f"{where}: {key}: unknown key; valid keys here: {', '.join(valid)}"
    if err["type"] == "missing":
        return f"{where}: {key}: required key is missing"
    got = err.get("input")
    return f"{where}: {key}: {err['msg'].lower()} (got {got!r})"


def _valid_keys(section_loc: tuple[str, ...]) -> list[str]:
    model: type[BaseModel] = Settings
    for part in section_loc:
        field = model.model_fields.get(part)
        if field is None or not isinstance(field.annotation, type):
            return []
        model = field.annotation
    return [k for k in model.model_fields if k not in ("source", "base_dir")]
