"""gRPC health checking (``grpc.health.v1``) for a service's gRPC server.

The overall status (service name ``""``) and each named service start SERVING once the server
is ready and go NOT_SERVING when shutdown begins, so load balancers stop sending new calls
while in-flight ones drain.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from constellation.attestation.service.status import ErrorStatusInterceptor


class Health:
    """The health servicer of one gRPC server."""

    def __init__(self, services: Sequence[str] = ()) -> None:
        self._services = ("", *services)
        self.servicer = health.HealthServicer()
        for name in self._services:
            self.servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    def attach(self, server: grpc.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    def serving(self) -> None:
        for name in self._services:
            self.servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    def not_serving(self) -> None:
        self.servicer.enter_graceful_shutdown()


class PlaintextHealthPorts:
    """``grpc.health.v1`` alone, in plaintext, for probes that speak neither TLS nor aTLS.

    A server of its own, so that nothing but health checks is reachable without TLS: the
    service's API stays on its (m)TLS or aTLS server. ``servers`` lists it only once it was
    given a port, so shutdown code can stop exactly what runs.
    """

    def __init__(self, health: Health) -> None:
        # The error table maps undecodable probes to INVALID_ARGUMENT, like every server here.
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=2), interceptors=[ErrorStatusInterceptor()]
        )
        health.attach(self.server)
        self._ports = 0

    def add(self, address: str) -> int:
        """Listen on ``address``; the bound port, 0 if it could not listen."""
        port = self.server.add_insecure_port(address)
        if port:
            self._ports += 1
        return port

    @property
    def servers(self) -> list[grpc.Server]:
        return [self.server] if self._ports else []

    def start(self) -> None:
        if self._ports:
            self.server.start()
