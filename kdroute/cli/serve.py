"""`kdroute serve`: run the OpenAI-compatible routing gateway with uvicorn.

fastapi, uvicorn and litellm are imported inside the command, so `kdroute serve --help` is light.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import typer
from pydantic import ValidationError

from kdroute.cli.common import console, state
from kdroute.config import GatewayConfig
from kdroute.errors import InputError


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        ctx: typer.Context,
        host: str | None = typer.Option(None, help="Address to bind (default: gateway.host, "
                                        "127.0.0.1). Other hosts need an API key."),
        port: int | None = typer.Option(None, help="Port (default: gateway.port)."),
        workers: int | None = typer.Option(None, help="Worker processes (default: "
                                           "gateway.workers); each has its own router and writer."),
        allow_public_without_key: bool = typer.Option(
            False, "--allow-public-without-key",
            help="Bind a non-loopback host even though no client API key is set (not advised)."),
        log_level: str = typer.Option("info", help="uvicorn log level."),
    ) -> None:
        """Run the OpenAI-compatible routing gateway.

        Point any OpenAI client at http://HOST:PORT/v1 with the model kdroute/auto (the router decides).

        kdroute/teacher and kdroute/student force a model; kdroute/auto@0.35 sets the threshold.

        Every request is costed and logged to the ledger. Client API keys are read from the variable named by gateway.api_keys_env (comma-separated).
        """
        settings = state(ctx).settings
        overrides = {"host": host, "port": port, "workers": workers}
        if allow_public_without_key:
            overrides["allow_public_without_key"] = True
        try:
            gateway = GatewayConfig.model_validate(
                dict(settings.gateway.model_dump(), **{k: v for k, v in overrides.items()
                                                       if v is not None}))
        except ValidationError as exc:
            err = exc.errors()[0]
            raise InputError(f"--{err['loc'][0]}: {err['msg'].lower()}") from None
        settings.gateway = gateway

        import uvicorn

        from kdroute.gateway.app import check_bind, create_app, read_api_keys
        from kdroute.gateway.server import uvicorn_options

        check_bind(settings, read_api_keys(settings))
        banner = (f"kdroute gateway on http://{gateway.host}:{gateway.port}/v1 (teacher "
                  f"{settings.teacher.model}, student {settings.student.model}, ledger "
                  f"{settings.path(settings.store.path)})")
        options = dict(uvicorn_options(settings), log_level=log_level)
        if gateway.workers == 1:
            app = create_app(settings)  # configuration errors stop here, before binding
            console.print(banner, highlight=False)
            uvicorn.run(app, host=gateway.host, port=gateway.port, **options)
            return
        # Several workers share one /metrics through prometheus_client's multiprocess files: a
        # fresh folder per server run (set before any worker imports prometheus_client).
        metrics_dir = tempfile.mkdtemp(prefix="kdroute-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        try:
            create_app(settings)  # fail fast in the parent: the workers would only fail one by one
            console.print(banner, highlight=False)
            _run_workers(settings, overrides, options)
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _run_workers(settings, overrides: dict, options: dict) -> None:
    import uvicorn

    gateway = settings.gateway
    # Each worker process builds its own app from the same config and overrides.
    if settings.source != "<defaults>":
        os.environ["KDROUTE_CONFIG"] = settings.source
    for key, value in overrides.items():
        if value is not None:
            os.environ[f"KDROUTE_GATEWAY_{key.upper()}"] = str(value).lower() \
                if isinstance(value, bool) else str(value)
    uvicorn.run("kdroute.gateway.app:app_from_env", factory=True, host=gateway.host,
                port=gateway.port, workers=gateway.workers, **options)
