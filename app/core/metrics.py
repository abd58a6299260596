"""Prometheus machinery: HTTP traffic (a pure ASGI middleware, cheap per request), rate-limit
refusals, gauges of shared figures sampled now and then, and the endpoint of processes that
serve no HTTP themselves (the worker). Each feature defines its own metrics beside its code."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "sms_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "sms_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            # The route template, not the raw path: user ids must not become label values.
            template = getattr(route, "path", "unmatched")
            method = scope["method"]
            HTTP_REQUESTS.labels(method, template, str(status)).inc()
            HTTP_LATENCY.labels(method, template).observe(time.perf_counter() - started)


RATE_LIMITED = Counter(
    "sms_rate_limited_total",
    "Requests refused by a rate limit, by the limit's name (the one with the longest wait)",
    ["limit"],
)


class SampledGauge(Collector):
    """A figure shared by every process (the queue's depth, the database's backlog) that one
    process samples now and then, e.g. the worker that ran the sweep. Exported only while
    fresh: a process that has not sampled it lately exports nothing, rather than an old value
    or a zero, so `max()` over the processes scraped is the current figure."""

    def __init__(
        self,
        name: str,
        documentation: str,
        *,
        fresh_for_seconds: float,
        registry: CollectorRegistry | None = REGISTRY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._fresh_for = fresh_for_seconds
        self._clock = clock
        # One tuple, replaced whole: the exporter may read it from another thread.
        self._sample: tuple[float, float] | None = None
        if registry is not None:
            registry.register(self)

    def set(self, value: float) -> None:
        self._sample = (value, self._clock())

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self._name, self._documentation)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self._name, self._documentation)
        sample = self._sample
        if sample is not None and self._clock() - sample[1] <= self._fresh_for:
            family.add_metric([], sample[0])
        yield family


# Every interface, as the API listens (Dockerfile): Prometheus scrapes from outside the container.
ALL_INTERFACES = "0.0.0.0"  # noqa: S104


def serve_metrics(port: int, addr: str = ALL_INTERFACES) -> Callable[[], None]:
    """This process's registry on http://addr:port/metrics, served by a thread of its own (for
    the worker, which has no HTTP server). Returns what stops it."""
    server, thread = start_http_server(port, addr)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
