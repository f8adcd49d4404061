"""`kdroute serve`: the OpenAI-compatible routing gateway.

    protocol   request schemas and the OpenAI error shape
    routing    the `model` field / header grammar and the routing decision
    backends   direct pooled HTTP for OpenAI-compatible endpoints, litellm for the rest
    errors     the upstream failure and provider name that backends and local share
    local      local Hugging Face models as a litellm custom provider
    costing    prices (config, else litellm's cost map) and per-request cost
    records    the request record (ledger row, and the hook the monitor consumes)
    service    serving logic: route, retry, fall back, stream, cost, log
    metrics    Prometheus metrics on a per-app registry
    app        the FastAPI app factory and HTTP routes
"""

from kdroute.gateway.app import create_app

__all__ = ["create_app"]
