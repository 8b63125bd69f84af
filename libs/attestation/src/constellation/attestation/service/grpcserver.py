"""A plain (no TLS) gRPC server for in-cluster services, with health and metrics wired in.

The VerificationService serves plain gRPC: it hands out evidence that protects itself
(DESIGN.md §6). It wants this frame around its servicer: a bounded thread pool, request
metrics, typed errors mapped to status codes, and ``grpc.health.v1`` reporting SERVING only
once the server has started. Attested servers use
:class:`~constellation.attestation.atls.server.AttestedServer` instead; the KeyService serves
mutual TLS with a cluster-internal CA (``constellation.keyservice.server``).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent import futures

import grpc

from constellation.attestation.service.health import Health
from constellation.attestation.service.metrics import ServiceMetrics
from constellation.attestation.service.status import ErrorStatusInterceptor


class PlainGrpcServer:
    """The frame around one servicer: register it on ``grpc_server``, ``add_port``, ``start``."""

    def __init__(
        self,
        service_name: str,
        metrics: ServiceMetrics,
        status_codes: Mapping[type[BaseException], grpc.StatusCode],
        *,
        max_workers: int,
    ) -> None:
        self.metrics = metrics
        self.health = Health([service_name])
        self.grpc_server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=[metrics.interceptor(), ErrorStatusInterceptor(status_codes)],
        )
        self.health.attach(self.grpc_server)

    def add_port(self, address: str) -> int:
        """Listen on ``address`` (``host:port``; port 0 picks one) and return the bound port."""
        return self.grpc_server.add_insecure_port(address)

    def start(self) -> None:
        self.grpc_server.start()
        self.health.serving()
