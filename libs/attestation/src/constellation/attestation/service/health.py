"""gRPC health checking (``grpc.health.v1``) for a service's gRPC server.

The overall status (service name ``""``) and each named service start SERVING once the server
is ready and go NOT_SERVING when shutdown begins, so load balancers stop sending new calls
while in-flight ones drain.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


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
