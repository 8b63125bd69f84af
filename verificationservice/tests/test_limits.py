"""The VerificationService is no quote oracle: short nonces and floods are refused unissued.

These tests run the real gRPC and HTTP servers on loopback around an issuer that records what
it is asked to sign (the TPM is not the subject here; ``test_server`` covers real quotes).
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import pytest

from constellation.attestation.atls.ratelimit import TokenBucket
from constellation.attestation.evidence import VERIFY_USER_DATA_LABEL
from constellation.attestation.service.metrics import ServiceMetrics
from constellation.proto import verify_pb2, verify_pb2_grpc
from constellation.verificationservice.evidence import EvidenceSource
from constellation.verificationservice.server import (
    HTTP_METHOD_LABEL,
    VerificationGrpcServer,
    VerificationHttpServer,
)


@dataclass
class RecordingIssuer:
    """Issues ``user_data || nonce`` and records every request it was asked to sign."""

    variant: str = "recording"
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)

    def issue(self, user_data: bytes, nonce: bytes) -> bytes:
        self.requests.append((user_data, nonce))
        return user_data + nonce


@dataclass
class Service:
    grpc_target: str
    http_base: str
    issuer: RecordingIssuer
    metrics: ServiceMetrics
    clock: list[float]


@pytest.fixture
def service() -> Iterator[Service]:
    clock = [1000.0]
    issuer = RecordingIssuer()
    metrics = ServiceMetrics("verificationservice")
    bucket = TokenBucket(rate=2, burst=2, clock=lambda: clock[0])
    source = EvidenceSource(issuer, metrics, rate_limit=bucket)
    grpc_server = VerificationGrpcServer(source, metrics)
    port = grpc_server.add_port("127.0.0.1:0")
    http_server = VerificationHttpServer(source, metrics, "127.0.0.1", 0)
    grpc_server.start()
    http_server.start()
    try:
        yield Service(
            f"127.0.0.1:{port}", f"http://127.0.0.1:{http_server.port}", issuer, metrics, clock
        )
    finally:
        http_server.close()
        grpc_server.grpc_server.stop(None).wait(5)


def _grpc(service: Service, nonce: bytes) -> bytes:
    with grpc.insecure_channel(service.grpc_target) as channel:
        answer = verify_pb2_grpc.APIStub(channel).GetAttestation(
            verify_pb2.GetAttestationRequest(nonce=nonce), timeout=10
        )
    return bytes(answer.attestation)


def _http(service: Service, nonce: bytes) -> tuple[int, dict[str, str], str | None]:
    query = base64.urlsafe_b64encode(nonce).decode().rstrip("=")
    url = f"{service.http_base}/?nonce={query}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback only
            return response.status, json.loads(response.read()), None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers.get("Retry-After")


def test_evidence_is_over_the_verify_label(service):
    nonce = os.urandom(32)
    assert _grpc(service, nonce) == VERIFY_USER_DATA_LABEL + nonce
    assert service.issuer.requests == [(VERIFY_USER_DATA_LABEL, nonce)]


@pytest.mark.parametrize("size", [1, 8, 15, 65])
def test_nonce_outside_16_to_64_bytes_is_refused_before_any_quote(service, size):
    with pytest.raises(grpc.RpcError) as refused:
        _grpc(service, os.urandom(size))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"got {size}" in refused.value.details()
    status, body, _ = _http(service, os.urandom(size))
    assert status == 400
    assert "16 to 64 random bytes" in body["error"]
    assert service.issuer.requests == []


def test_rate_bound_is_resource_exhausted_and_429(service):
    _grpc(service, os.urandom(16))
    assert _http(service, os.urandom(64))[0] == 200
    with pytest.raises(grpc.RpcError) as limited:
        _grpc(service, os.urandom(32))
    assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert limited.value.details() == "attestation rate exceeded; retry in 500 ms"
    status, body, retry_after = _http(service, os.urandom(32))
    assert (status, retry_after) == (429, "1")
    assert body == {"error": "attestation rate exceeded; retry in 500 ms"}
    assert len(service.issuer.requests) == 2
    assert service.metrics.requests(HTTP_METHOD_LABEL, "429") == 1
    assert service.metrics.requests("/verify.API/GetAttestation", "RESOURCE_EXHAUSTED") == 1
    service.clock[0] += 0.5
    _grpc(service, os.urandom(32))
    assert len(service.issuer.requests) == 3
