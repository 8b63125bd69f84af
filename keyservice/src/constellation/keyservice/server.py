"""The KeyService's gRPC server: ``kms.API/GetDataKey`` plus health and metrics.

Plain gRPC: the KeyService is reachable only inside the cluster (ClusterIP) and only the
JoinService calls it (DESIGN.md §6). Keys are never logged, only ids and lengths.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent import futures

import grpc
import structlog

from constellation.attestation.service.health import Health
from constellation.attestation.service.metrics import ServiceMetrics
from constellation.attestation.service.status import ErrorStatusInterceptor
from constellation.keyservice.errors import InvalidRequestError
from constellation.keyservice.keys import DataKeys
from constellation.proto import kms_pb2, kms_pb2_grpc

_log = structlog.get_logger("constellation.keyservice")

SERVICE_NAME = "kms.API"
STATUS_CODES: Mapping[type[BaseException], grpc.StatusCode] = {
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
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
    """The gRPC server with health and metrics wired in; ``add_port`` then ``start``."""

    def __init__(self, keys: DataKeys, metrics: ServiceMetrics, *, max_workers: int = 8) -> None:
        self.metrics = metrics
        self.health = Health([SERVICE_NAME])
        self.grpc_server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=[metrics.interceptor(), ErrorStatusInterceptor(STATUS_CODES)],
        )
        kms_pb2_grpc.add_APIServicer_to_server(KeyServiceServicer(keys), self.grpc_server)
        self.health.attach(self.grpc_server)

    def add_port(self, address: str) -> int:
        return self.grpc_server.add_insecure_port(address)

    def start(self) -> None:
        self.grpc_server.start()
        self.health.serving()
