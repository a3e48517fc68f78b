"""Serve an open attribution service over HTTP with uvicorn until stopped."""

from __future__ import annotations

from collections.abc import Callable

import uvicorn

from attribution_audit.http.api import create_app
from attribution_audit.services.serving import AttributionService


def serve(
    service: AttributionService,
    host: str,
    port: int,
    max_upload_bytes: int,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM finish the requests in flight; the caller then closes the service)."""
    app = create_app(service, max_upload_bytes=max_upload_bytes)
    announce(
        f"serving on http://{host}:{port} (console at /console/, OpenAPI schema at /openapi.json; stop with Ctrl-C)"
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
