"""The KeyService's gRPC servers: ``kms.API/GetDataKey`` over mutual TLS, health in plaintext.

Layers of a call on the TLS port, outside in:

1. the TLS handshake (:class:`~constellation.keyservice.tls.ServerTLS`): no client certificate
   from the cluster-internal service CA, no connection (the caller sees UNAVAILABLE);
2. request metrics (every call counted by method and outcome);
3. the one table :data:`STATUS_CODES` that maps typed errors to status codes (with the shared
   defaults: request bytes that are not a ``GetDataKeyRequest`` get INVALID_ARGUMENT before
   the caller check);
4. :class:`~constellation.keyservice.tls.CallerInterceptor`: the certificate must name the
   JoinService, or UnauthorizedCallerError (PERMISSION_DENIED);
5. the servicer, which converts messages and derives the key (``keys.DataKeys``).

There is no plaintext ``kms.API``: :meth:`KeyServiceServer.add_port` only ever adds a TLS port.
Kubelet gRPC probes cannot present a client certificate, so ``grpc.health.v1`` also gets a
separate plaintext server (:meth:`KeyServiceServer.add_health_port`) that serves nothing else.
Keys are never logged, only ids and lengths.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent import futures

import grpc
import structlog

from constellation.attestation.service.health import Health, PlaintextHealthPorts
from constellation.attestation.service.metrics import ServiceMetrics
from constellation.attestation.service.status import ErrorStatusInterceptor
from constellation.keyservice.errors import (
    ConfigError,
    InvalidRequestError,
    UnauthorizedCallerError,
)
from constellation.keyservice.keys import DataKeys
from constellation.keyservice.tls import CallerInterceptor, ServerTLS
from constellation.proto import kms_pb2, kms_pb2_grpc

_log = structlog.get_logger("constellation.keyservice")

SERVICE_NAME = "kms.API"
STATUS_CODES: Mapping[type[BaseException], grpc.StatusCode] = {
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    UnauthorizedCallerError: grpc.StatusCode.PERMISSION_DENIED,
}


class KeyServiceServicer(kms_pb2_grpc.APIServicer):
    def __init__(self, keys: DataKeys) -> None:
        self._keys = keys

    def GetDataKey(
        self, request: kms_pb2.GetDataKeyRequest, context: grpc.ServicerContext
    ) -> kms_pb2.GetDataKeyResponse:
        key = self._keys.derive(request.data_key_id, request.length)
        _log.info("keyservice.data_key_issued", data_key_id=request.data_key_id, length=len(key))
        return kms_pb2.GetDataKeyResponse(data_key=key)


class KeyServiceServer:
    """The mutual-TLS server and the plaintext health server.

    ``add_port`` (TLS) and optionally ``add_health_port``, then ``start``; stop every server in
    ``grpc_servers``.
    """

    def __init__(
        self, keys: DataKeys, metrics: ServiceMetrics, tls: ServerTLS, *, max_workers: int = 8
    ) -> None:
        self.metrics = metrics
        self.health = Health([SERVICE_NAME])
        self._credentials = tls.credentials()
        self.grpc_server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=[
                metrics.interceptor(),
                ErrorStatusInterceptor(STATUS_CODES),
                CallerInterceptor(),
            ],
        )
        kms_pb2_grpc.add_APIServicer_to_server(KeyServiceServicer(keys), self.grpc_server)
        self.health.attach(self.grpc_server)
        self.health_ports = PlaintextHealthPorts(self.health)

    @property
    def grpc_servers(self) -> list[grpc.Server]:
        """Every server that was given a port (what shutdown has to stop)."""
        return [self.grpc_server, *self.health_ports.servers]

    def add_port(self, address: str) -> int:
        """Serve ``kms.API`` (and health) over mutual TLS on ``address``; the bound port."""
        port = self.grpc_server.add_secure_port(address, self._credentials)
        if port == 0:
            raise ConfigError(f"cannot listen for mutual-TLS gRPC on {address}")
        return port

    def add_health_port(self, address: str) -> int:
        """Serve only ``grpc.health.v1``, in plaintext, on ``address``; the bound port."""
        port = self.health_ports.add(address)
        if port == 0:
            raise ConfigError(f"cannot listen for health checks on {address}")
        return port

    def start(self) -> None:
        self.grpc_server.start()
        self.health_ports.start()
        self.health.serving()

    def stop(self, grace: float | None = None) -> None:
        """Stop every server; waits (bounded) for in-flight calls."""
        self.health.not_serving()
        for event in [server.stop(grace) for server in self.grpc_servers]:
            event.wait((grace or 0.0) + 5.0)
