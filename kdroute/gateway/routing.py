"""Which model answers: parse the route a client asked for, then ask the router when it is `auto`.

Routing options travel in the OpenAI `model` field so stock clients work unchanged (RouteLLM's
convention): `kdroute/auto`, `kdroute/auto@0.35` (threshold override), `kdroute/teacher`,
`kdroute/student`. The `x-kdroute-route` header takes the same values and wins over the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from kdroute.gateway.protocol import GatewayError

PREFIX = "kdroute/"
ROLES = ("teacher", "student")
ROUTE_HEADER = "x-kdroute-route"
MODEL_IDS = ("kdroute/auto", "kdroute/teacher", "kdroute/student")


class Router(Protocol):
    """What the gateway needs from `kdroute.route.load_router(settings)` (or an injected one)."""

    scorer_name: str
    threshold: float
    version: str

    def route(self, conversation: list[dict[str, Any]],
              threshold: float | None = None) -> tuple[str, float]: ...


@dataclass(frozen=True)
class RouteChoice:
    """What the client asked for: `auto` (maybe with its own threshold) or a fixed role."""

    mode: str  # auto | teacher | student
    threshold: float | None = None


@dataclass(frozen=True)
class Decision:
    role: str  # teacher | student
    reason: str  # router | override | breaker (the monitor's quality breaker overrode the router)
    score: float | None
    threshold: float | None


def parse_route(value: str, param: str = "model") -> RouteChoice:
    """`kdroute/auto@0.35` -> RouteChoice("auto", 0.35). Unknown names are 404, bad numbers 400."""
    name = value.strip()
    shown = value if len(value) <= 64 else value[:64] + "…"  # never echo a 900 KB name back
    bare = name.removeprefix(PREFIX)
    mode, sep, raw = bare.partition("@")
    if mode not in ("auto", *ROLES) or (sep and mode != "auto"):
        raise GatewayError(404, f"The model `{shown}` does not exist; use one of "
                                f"{', '.join(MODEL_IDS)} or kdroute/auto@<threshold>",
                           param=param, code="model_not_found")
    if not sep:
        return RouteChoice(mode)
    try:
        threshold = float(raw)
    except ValueError:
        threshold = float("nan")
    if not 0.0 <= threshold <= 1.0:  # also rejects NaN
        raise GatewayError(400, f"{param}: threshold override must be a number in [0, 1] "
                                f"(got {raw[:32]!r})", param=param, code="invalid_value")
    return RouteChoice("auto", threshold)


def choose_route(model_field: str, header: str | None) -> RouteChoice:
    if header is not None and header.strip():
        return parse_route(header, param=ROUTE_HEADER)
    return parse_route(model_field)


def decide(router: Router, choice: RouteChoice, conversation: list[dict[str, Any]]) -> Decision:
    """Run the router for `auto`; a fixed role skips scoring (nothing to decide)."""
    if choice.mode in ROLES:
        return Decision(choice.mode, "override", None, None)
    threshold = router.threshold if choice.threshold is None else choice.threshold
    role, score = router.route(conversation, threshold=threshold)
    return Decision(role, "router", float(score), float(threshold))
