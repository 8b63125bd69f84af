"""The KeyService over real gRPC on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from grpc_health.v1 import health_pb2, health_pb2_grpc

from constellation.attestation.service.metrics import ServiceMetrics
from constellation.keyservice.keys import DataKeys, MasterSecret
from constellation.keyservice.server import KeyServiceServer
from constellation.proto import kms_pb2, kms_pb2_grpc

ZERO_UUID = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def server() -> Iterator[tuple[KeyServiceServer, grpc.Channel]]:
    keys = DataKeys(MasterSecret(key=b"\x00" * 32, salt=b"\x00" * 32))
    service = KeyServiceServer(keys, ServiceMetrics("keyservice"))
    port = service.add_port("127.0.0.1:0")
    service.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield service, channel
    finally:
        channel.close()
        service.grpc_server.stop(None).wait(5)


def test_get_data_key_matches_independent_hkdf(server):
    _, channel = server
    answer = kms_pb2_grpc.APIStub(channel).GetDataKey(
        kms_pb2.GetDataKeyRequest(data_key_id=ZERO_UUID, length=32), timeout=10
    )
    expected = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"\x00" * 32, info=f"key-{ZERO_UUID}".encode()
    ).derive(b"\x00" * 32)
    assert answer.data_key == expected


@pytest.mark.parametrize(
    ("data_key_id", "length"), [("", 32), (ZERO_UUID, 0), (ZERO_UUID, 4097), ("x" * 300, 32)]
)
def test_invalid_requests_are_invalid_argument(server, data_key_id, length):
    service, channel = server
    with pytest.raises(grpc.RpcError) as refused:
        kms_pb2_grpc.APIStub(channel).GetDataKey(
            kms_pb2.GetDataKeyRequest(data_key_id=data_key_id, length=length), timeout=10
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert service.metrics.requests("/kms.API/GetDataKey", "INVALID_ARGUMENT") == 1


def test_health_and_request_metrics(server):
    service, channel = server
    status = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="kms.API"), timeout=10
    )
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    kms_pb2_grpc.APIStub(channel).GetDataKey(
        kms_pb2.GetDataKeyRequest(data_key_id="a", length=1), timeout=10
    )
    assert service.metrics.requests("/kms.API/GetDataKey", "OK") == 1
