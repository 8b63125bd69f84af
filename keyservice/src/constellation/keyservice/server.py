"""The KeyService's gRPC server: ``kms.API/GetDataKey`` plus health and metrics.

Plain gRPC: the KeyService is reachable only inside the cluster (ClusterIP) and only the
JoinService calls it (DESIGN.md §6). Keys are never logged, only ids and lengths.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
import structlog

from constellation.attestation.service.grpcserver import PlainGrpcServer
from constellation.attestation.service.metrics import ServiceMetrics
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


class KeyServiceServer(PlainGrpcServer):
    """The gRPC server with health and metrics wired in; ``add_port`` then ``start``."""

    def __init__(self, keys: DataKeys, metrics: ServiceMetrics, *, max_workers: int = 8) -> None:
        super().__init__(SERVICE_NAME, metrics, STATUS_CODES, max_workers=max_workers)
        kms_pb2_grpc.add_APIServicer_to_server(KeyServiceServicer(keys), self.grpc_server)
