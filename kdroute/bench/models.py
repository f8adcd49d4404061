"""Which model a bench run talks to, how lm-eval should reach it, and its fingerprint.

A model is either a local Hugging Face directory (`hf:<path>`, run with lm-eval's `hf` model) or
an OpenAI-compatible endpoint (run with `local-chat-completions` or `local-completions`). The
fingerprint keys the teacher cache: a hash of the weights and config files of a local model, or
the endpoint URL and model name of a remote one.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from kdroute.errors import BackendError, InputError
from kdroute.fingerprint import model_fingerprint

if TYPE_CHECKING:
    from kdroute.config import ModelConfig, Settings

Api = Literal["chat", "completions"]
ROLES = ("teacher", "student", "system")
_OPENAI_BASE = "https://api.openai.com/v1"


@dataclass(frozen=True)
class ModelSpec:
    """A model as the bench sees it."""

    role: str  # teacher | student | system
    reference: str  # as written in config or on the command line
    kind: Literal["hf", "endpoint"]
    path: Path | None = None  # local directory (hf)
    api_base: str | None = None  # e.g. http://127.0.0.1:8000/v1 (endpoint)
    api_model: str | None = None  # the `model` field sent to the endpoint
    api: Api = "chat"
    api_key_env: str | None = None
    timeout_s: float = 60.0
    max_retries: int = 2
    prices: tuple[float | None, float | None] = (None, None)
    tokenizer: str | None = None  # HF tokenizer of a completions endpoint (enables log-likelihood)

    @property
    def is_chat_endpoint(self) -> bool:
        return self.kind == "endpoint" and self.api == "chat"

    @property
    def scores_loglikelihood(self) -> bool:
        """Chat endpoints return text only, so they cannot run log-likelihood (multiple-choice)
        tasks; completions endpoints can when their tokenizer is known (prompt log-probs)."""
        return self.kind == "hf" or (self.api == "completions" and self.tokenizer is not None)

    @property
    def label(self) -> str:
        if self.kind == "hf":
            return self.reference
        return f"{self.api_model} @ {self.api_base}"

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


def from_config(role: str, config: ModelConfig, settings: Settings, api: Api = "chat") -> ModelSpec:
    """A spec from a [teacher]/[student] config section (or a ModelConfig built from flags)."""
    common = {"role": role, "reference": config.model, "timeout_s": config.timeout_s,
              "max_retries": config.max_retries, "api_key_env": config.api_key_env,
              "prices": (config.input_price_per_1m, config.output_price_per_1m)}
    if config.is_local:
        return ModelSpec(kind="hf", path=settings.model_path(config.model), **common)
    provider, _, name = config.model.partition("/")
    if not name:  # a bare name: the whole string is the model sent to the endpoint
        provider, name = "", config.model
    api_base = config.api_base or (_OPENAI_BASE if provider == "openai" else None)
    if api_base is None:
        raise InputError(
            f"{role} model {config.model!r}: kdroute bench needs an OpenAI-compatible endpoint; "
            f"set [{role}].api_base or pass --{role}-endpoint URL")
    return ModelSpec(kind="endpoint", api_base=api_base.rstrip("/"), api_model=name, api=api,
                     **common)


def endpoint(role: str, url: str, model: str, api: Api = "chat", api_key_env: str | None = None,
             timeout_s: float = 60.0, tokenizer: str | None = None) -> ModelSpec:
    """A spec from `--<role>-endpoint URL --<role>-model NAME` (URL is the /v1 base)."""
    if not url.startswith(("http://", "https://")):
        raise InputError(f"--{role}-endpoint {url!r}: expected an http(s):// URL ending in /v1")
    return ModelSpec(role=role, reference=f"{url.rstrip('/')}#{model}", kind="endpoint",
                     api_base=url.rstrip("/"), api_model=model, api=api,
                     api_key_env=api_key_env, timeout_s=timeout_s, tokenizer=tokenizer)


def check(spec: ModelSpec) -> None:
    """Fail early with one line when a model cannot be used (missing folder, dead endpoint)."""
    if spec.kind == "hf":
        assert spec.path is not None
        if not spec.path.is_dir():
            raise InputError(f"{spec.role} model directory not found: {spec.path}")
        if not (spec.path / "config.json").is_file():
            raise InputError(f"{spec.role} model directory {spec.path} has no config.json "
                             "(not a Hugging Face model folder)")
        return
    import httpx

    url = f"{spec.api_base}/models"
    try:  # any HTTP answer means the server is there; only a transport failure is fatal
        httpx.get(url, timeout=min(spec.timeout_s, 10.0), headers=_auth_header(spec))
    except httpx.HTTPError as exc:
        raise BackendError(f"{spec.role} endpoint {spec.api_base} is unreachable: "
                           f"{type(exc).__name__}: {exc}") from None


def _auth_header(spec: ModelSpec) -> dict[str, str]:
    key = spec.api_key()
    return {"Authorization": f"Bearer {key}"} if key else {}


def fingerprint(spec: ModelSpec) -> str:
    """The model's defining files (hf: `kdroute.fingerprint`, shared with distillation) or its
    endpoint identity, hashed to 16 hex digits."""
    digest = hashlib.sha256()
    if spec.kind == "endpoint":
        digest.update(f"endpoint\0{spec.api_base}\0{spec.api_model}\0{spec.api}".encode())
        return digest.hexdigest()[:16]
    assert spec.path is not None
    return model_fingerprint(spec.path)


def lm_eval_args(spec: ModelSpec) -> tuple[str, dict]:
    """lm-eval's model name and model_args for this spec."""
    if spec.kind == "hf":
        return "hf", {"pretrained": str(spec.path)}  # device and batch size: simple_evaluate
    args = {"model": spec.api_model, "num_concurrent": 1, "max_retries": spec.max_retries,
            "timeout": max(1, int(spec.timeout_s)), "tokenized_requests": False,
            "tokenizer_backend": None}
    if spec.api_key():
        args["header"] = _auth_header(spec)
    if spec.api == "chat":
        args["base_url"] = f"{spec.api_base}/chat/completions"
        return "local-chat-completions", args
    args["base_url"] = f"{spec.api_base}/completions"
    if spec.tokenizer:
        args.update(tokenizer_backend="huggingface", tokenizer=spec.tokenizer)
    return "local-completions", args
