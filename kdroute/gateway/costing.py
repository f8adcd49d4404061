"""What a request cost, and what it would have cost on the teacher.

Prices are USD per 1M tokens: from config when both are set, else from litellm's bundled cost map
(read offline: LITELLM_LOCAL_MODEL_COST_MAP=True), else the gateway refuses to start, because a
ledger of savings with a made-up price is worse than none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from kdroute.config import ModelConfig
from kdroute.errors import ConfigError


@dataclass(frozen=True)
class Prices:
    input_per_1m: float
    output_per_1m: float
    source: str = "config"  # config | litellm


def cost_usd(prices: Prices, prompt_tokens: int, completion_tokens: int) -> float:
    """USD for one request: tokens times the per-token prices."""
    return (prompt_tokens * prices.input_per_1m + completion_tokens * prices.output_per_1m) / 1e6


def savings_usd(teacher_cost: float, actual_cost: float) -> float:
    """Teacher-equivalent cost minus what was paid (negative when a fallback paid twice)."""
    return teacher_cost - actual_cost


def resolve_prices(role: str, model: ModelConfig) -> Prices:
    if model.input_price_per_1m is not None and model.output_price_per_1m is not None:
        return Prices(model.input_price_per_1m, model.output_price_per_1m, "config")
    found = None if model.is_local else litellm_prices(model.model)
    if found is None:
        raise ConfigError(
            f"{role}.input_price_per_1m / {role}.output_price_per_1m: not set and litellm's cost "
            f"map has no price for {model.model!r}; set both in [{role}]")
    given_in, given_out = model.input_price_per_1m, model.output_price_per_1m
    return Prices(found.input_per_1m if given_in is None else given_in,
                  found.output_per_1m if given_out is None else given_out, "litellm")


def litellm_prices(model: str) -> Prices | None:
    """Look a model string up in litellm's cost map (`openai/gpt-4o`, then `gpt-4o`)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    candidates = [model]
    if "/" in model:
        candidates.append(model.split("/", 1)[1])
    for name in candidates:
        info = litellm.model_cost.get(name)
        if info and info.get("input_cost_per_token") is not None:
            return Prices(float(info["input_cost_per_token"]) * 1e6,
                          float(info.get("output_cost_per_token") or 0.0) * 1e6, "litellm")
    return None
