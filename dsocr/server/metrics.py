"""Prometheus metrics of one server (its own registry, so several apps in one process do not collide).

Counters are totals; rates (pages/s, tokens/s) are Prometheus' `rate()` over them.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self, engine: Any, store: Any) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("dsocr_http_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=registry)
        self.latency = Histogram("dsocr_http_request_seconds", "HTTP request latency", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.pages = Counter("dsocr_pages", "Pages converted, by final status", ["status"], registry=registry)
        self.recovered = Counter("dsocr_pages_recovered", "Pages whose loop recovery retry won", ["strategy"],
                                 registry=registry)
        queue = Gauge("dsocr_engine_queue_depth", "Requests waiting for the model", registry=registry)
        queue.set_function(lambda: engine.queue_depth)
        for name, doc, read in (
            ("dsocr_engine_requests", "Requests run by the model", lambda: engine.stats.requests),
            ("dsocr_engine_batches", "Batches run by the model", lambda: engine.stats.batches),
            ("dsocr_engine_generated_tokens", "Tokens generated", lambda: engine.stats.generated_tokens),
            ("dsocr_engine_busy_seconds", "Seconds the model was busy", lambda: engine.stats.busy_seconds),
            ("dsocr_engine_failures", "Requests whose batch failed", lambda: engine.stats.failures),
        ):
            gauge = Gauge(name + "_total", doc, registry=registry)  # monotonic totals read from the engine
            gauge.set_function(read)
        jobs = Gauge("dsocr_jobs", "Document jobs by status", ["status"], registry=registry)
        for status in ("queued", "running", "done", "failed"):
            jobs.labels(status).set_function(lambda s=status: store.counts().get(s, 0))

    def request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def page_done(self, page: Any) -> None:
        self.pages.labels(page.status).inc()
        if page.recovered_by:
            self.recovered.labels(page.recovered_by).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
