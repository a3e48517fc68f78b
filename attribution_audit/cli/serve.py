"""``attribution-audit serve``: the HTTP API and web console over one loaded model and open stores."""

from __future__ import annotations

from typing import Annotated

import typer

from attribution_audit.cli.common import EfOption, EmbedderOption, settings_of


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to bind; loopback by default (put a TLS proxy in front).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    max_upload_mb: Annotated[
        float, typer.Option(min=0.001, help="Largest image accepted (MiB); a request may carry 4x this in all.")
    ] = 16.0,
    ef: EfOption = None,
    embedder: EmbedderOption = None,
) -> None:
    """Serve the JSON API under /v1 (OpenAPI at /openapi.json), /metrics and the web console until stopped.

    Clients send `Authorization: Bearer KEY` with a key from `attribution-audit keys create NAME`.

    \b
    Example: attribution-audit --data-dir .demo/data serve --port 8000
    """
    from attribution_audit.api import open_service
    from attribution_audit.http.server import serve as run

    with open_service(settings_of(ctx, embedder, ef)) as service:  # the model and the stores, opened once
        run(service, host, port, int(max_upload_mb * 1024 * 1024), announce=lambda line: typer.echo(line, err=True))
