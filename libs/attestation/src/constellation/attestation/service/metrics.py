"""Prometheus metrics of a service: requests by outcome and attestation latency.

Each service owns a registry (no process-global state, so several services can share a test
process) and serves it over HTTP on its metrics port. Metric names:

- ``constellation_requests_total{service, method, outcome}``: outcome is the gRPC status code
  name (``OK``, ``INVALID_ARGUMENT``, ...) or, for HTTP, the status number.
- ``constellation_attestation_seconds{service, operation}``: time spent issuing or validating
  evidence.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from constellation.attestation.service.handlers import (
    Behaviour,
    BehaviourInterceptor,
    is_abort,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    """The metrics of one service, in their own registry."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry or CollectorRegistry()
        self._requests = Counter(
            "constellation_requests",
            "Requests handled, by method and outcome.",
            ["service", "method", "outcome"],
            registry=self.registry,
        )
        self._attestation = Histogram(
            "constellation_attestation_seconds",
            "Time spent issuing or validating attestation evidence.",
            ["service", "operation"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def count(self, method: str, outcome: str) -> None:
        self._requests.labels(self.service, method, outcome).inc()

    def requests(self, method: str, outcome: str) -> float:
        """Current value of one request counter (for tests and diagnostics)."""
        value = self.registry.get_sample_value(
            "constellation_requests_total",
            {"service": self.service, "method": method, "outcome": outcome},
        )
        return value or 0.0

    @contextmanager
    def time_attestation(self, operation: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self._attestation.labels(self.service, operation).observe(time.perf_counter() - start)

    def interceptor(self) -> grpc.ServerInterceptor:  # type: ignore[type-arg]
        return _RequestCounter(self)


class _RequestCounter(BehaviourInterceptor):
    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics

    def around(self, method: str, behaviour: Behaviour) -> Behaviour:
        def run(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                result = behaviour(request, context)
            except Exception as exc:
                code = _status(context) if is_abort(exc) else None
                self._metrics.count(method, code.name if code else "INTERNAL")
                raise
            code = _status(context)
            self._metrics.count(method, code.name if code else "OK")
            return result

        return run


def _status(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    """The status a handler set or aborted with (``code()`` is missing from the type stubs)."""
    code = getattr(context, "code", None)
    value = code() if callable(code) else None
    return value if isinstance(value, grpc.StatusCode) else None


@dataclass
class MetricsServer:
    """The HTTP endpoint serving one registry (``/metrics``)."""

    server: WSGIServer
    port: int

    @classmethod
    def start(cls, metrics: ServiceMetrics, address: str, port: int) -> MetricsServer:
        server, _thread = start_http_server(port, addr=address, registry=metrics.registry)
        return cls(server=server, port=int(server.server_port))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
