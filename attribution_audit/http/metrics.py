"""Prometheus metrics of the service: requests by route and status, latency histograms, the attribution queue, the
decoded pixels in flight."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from attribution_audit.services.serving import AttributionService

# The methods counted by name; any other (a client may send any token) is counted as "other", so that clients cannot
# add a label value, and a series to every scrape, per request.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """One registry per app (several apps in one process, as in tests, do not collide)."""

    def __init__(self, service: AttributionService) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "attribution_http_requests", "HTTP requests served", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "attribution_http_request_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        queue = Gauge(
            "attribution_queue_images", "Images waiting for, or in, the attribution worker", registry=self.registry
        )
        queue.set_function(lambda: service.queue_depth)
        attributed = Gauge("attribution_images_attributed", "Images attributed and committed", registry=self.registry)
        attributed.set_function(lambda: service.attributed)
        batches = Gauge("attribution_batches", "Embedding batches run by the worker", registry=self.registry)
        batches.set_function(lambda: service.batches)
        embedding = Gauge("attribution_embed_seconds", "The embedder thread's busy time", registry=self.registry)
        embedding.set_function(lambda: service.embed_seconds)
        recording = Gauge(
            "attribution_record_seconds",
            "The recorder thread's busy time (search, re-rank, exact check, audit write)",
            registry=self.registry,
        )
        recording.set_function(lambda: service.record_seconds)
        pixels = Gauge(
            "attribution_inflight_pixels",
            "Decoded pixels reserved by requests being decoded or waiting to be embedded",
            registry=self.registry,
        )
        pixels.set_function(lambda: service.pixels.in_use)
        budget = Gauge(
            "attribution_inflight_pixels_limit",
            "The budget of decoded pixels in flight (ATTRIBUTION_AUDIT_MAX_INFLIGHT_PIXELS)",
            registry=self.registry,
        )
        budget.set_function(lambda: service.pixels.limit)
        failures = Gauge(
            "attribution_checkpoint_failures",
            "Automatic checkpoints that failed after their attributions were committed (see the server's log)",
            registry=self.registry,
        )
        failures.set_function(lambda: service.checkpoint_failures)

    def text(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request under its route's template (``/v1/attributions/{request_id}``) and its
    method (one of :data:`METHODS`, else "other")."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def tracked(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
