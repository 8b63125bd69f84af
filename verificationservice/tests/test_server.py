"""VerificationService endpoints with a real swtpm: evidence validates for the caller's nonce."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from constellation.attestation.errors import ValidationError
from constellation.attestation.evidence import VERIFY_USER_DATA_LABEL
from constellation.attestation.measurements import Measurements
from constellation.attestation.service.metrics import ServiceMetrics
from constellation.attestation.testing.platform import node_validator
from constellation.attestation.vtpm import VtpmIssuer, firmware_measure
from constellation.proto import verify_pb2, verify_pb2_grpc
from constellation.verificationservice.evidence import EvidenceSource, event_log_reader
from constellation.verificationservice.server import (
    HTTP_METHOD_LABEL,
    VerificationGrpcServer,
    VerificationHttpServer,
)

from .conftest import ak_certificate

pytestmark = pytest.mark.swtpm


@dataclass
class Running:
    grpc_target: str
    http_base: str
    metrics: ServiceMetrics


def _start(
    tcti: str, event_log: Path | None = None
) -> tuple[Running, VerificationGrpcServer, VerificationHttpServer]:
    metrics = ServiceMetrics("verificationservice")
    log = event_log_reader(event_log) if event_log is not None else None
    issuer = VtpmIssuer(tcti, event_log=log, ak_certificate=ak_certificate(tcti))
    source = EvidenceSource(issuer, metrics)
    grpc_server = VerificationGrpcServer(source, metrics)
    port = grpc_server.add_port("127.0.0.1:0")
    http_server = VerificationHttpServer(source, metrics, "127.0.0.1", 0)
    grpc_server.start()
    http_server.start()
    running = Running(f"127.0.0.1:{port}", f"http://127.0.0.1:{http_server.port}", metrics)
    return running, grpc_server, http_server


@pytest.fixture
def service(swtpm) -> Iterator[Running]:
    running, grpc_server, http_server = _start(swtpm.tcti)
    try:
        yield running
    finally:
        http_server.close()
        grpc_server.grpc_server.stop(None).wait(5)


def _get(url: str) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - loopback only
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_grpc_evidence_validates_for_nonce_and_user_data(swtpm, service, validator_for):
    validator = validator_for(swtpm.tcti)
    nonce = os.urandom(32)
    with grpc.insecure_channel(service.grpc_target) as channel:
        answer = verify_pb2_grpc.APIStub(channel).GetAttestation(
            verify_pb2.GetAttestationRequest(nonce=nonce), timeout=30
        )
    verified = validator.verify(answer.attestation, nonce)
    assert verified.user_data == VERIFY_USER_DATA_LABEL
    with pytest.raises(ValidationError):
        validator.verify(answer.attestation, os.urandom(32))  # bound to *our* nonce only


def test_http_evidence_validates_for_nonce_and_user_data(swtpm, service, validator_for):
    validator = validator_for(swtpm.tcti)
    nonce = os.urandom(32)
    query = base64.urlsafe_b64encode(nonce).decode().rstrip("=")
    status, body = _get(f"{service.http_base}/?nonce={query}")
    assert status == 200
    document = base64.b64decode(body["data"], validate=True)
    assert validator.validate(document, nonce) == VERIFY_USER_DATA_LABEL
    assert service.metrics.requests(HTTP_METHOD_LABEL, "200") == 1


@pytest.mark.parametrize(
    "query", ["", "?nonce=", "?nonce=AAAA&nonce=BBBB", "?nonce=%%%", "?nonce=" + "A" * 200]
)
def test_http_bad_nonce_is_400(service, query):
    status, body = _get(f"{service.http_base}/{query}")
    assert status == 400
    assert body["error"]
    assert service.metrics.requests(HTTP_METHOD_LABEL, "400") == 1


def test_http_other_paths_and_methods_refused(service):
    status, _ = _get(f"{service.http_base}/metrics?nonce=AAAA")
    assert status == 404
    request = urllib.request.Request(  # noqa: S310 - loopback only
        f"{service.http_base}/?nonce=AAAA", data=b"", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310 - loopback only
    assert refused.value.code == 405


@pytest.mark.parametrize("nonce", [b"", b"x" * 15, b"x" * 65])
def test_grpc_bad_nonce_is_invalid_argument(service, nonce):
    with grpc.insecure_channel(service.grpc_target) as channel, pytest.raises(grpc.RpcError) as bad:
        verify_pb2_grpc.APIStub(channel).GetAttestation(
            verify_pb2.GetAttestationRequest(nonce=nonce), timeout=30
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert service.metrics.requests("/verify.API/GetAttestation", "INVALID_ARGUMENT") == 1


def test_tpm_failure_is_unavailable_without_details(swtpm_factory):
    (tpm,) = swtpm_factory(1)
    running, grpc_server, http_server = _start(tpm.tcti)
    tpm.stop()
    try:
        with (
            grpc.insecure_channel(running.grpc_target) as channel,
            pytest.raises(grpc.RpcError) as failed,
        ):
            verify_pb2_grpc.APIStub(channel).GetAttestation(
                verify_pb2.GetAttestationRequest(nonce=b"n" * 32), timeout=30
            )
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        status, body = _get(f"{running.http_base}/?nonce={'A' * 43}")
        assert status == 503
        assert body == {"error": "evidence could not be issued"}
    finally:
        http_server.close()
        grpc_server.grpc_server.stop(None).wait(5)


def test_event_log_is_attached_and_replays(swtpm, tmp_path):
    log = b""
    for pcr in (4, 9, 11):
        log = firmware_measure(swtpm.tcti, log, pcr, hashlib.sha256(bytes([pcr])).digest())
    log_file = tmp_path / "eventlog"
    log_file.write_bytes(log)
    running, grpc_server, http_server = _start(swtpm.tcti, log_file)
    try:
        nonce = os.urandom(32)
        query = base64.urlsafe_b64encode(nonce).decode()
        status, body = _get(f"{running.http_base}/?nonce={query}")
        assert status == 200
        document = base64.b64decode(body["data"])
        probe = node_validator(Measurements()).verify(document, nonce)
        assert probe.identity is not None
        assert probe.identity.name == "mini-worker-0"
        expected = Measurements.from_dict({str(i): probe.pcrs[i].hex() for i in (4, 9, 11)})
        strict = node_validator(expected)
        assert strict.validate(document, nonce) == VERIFY_USER_DATA_LABEL

        log_file.unlink()  # a node whose log vanished cannot produce evidence
        status, body = _get(f"{running.http_base}/?nonce={query}")
        assert status == 503
        assert body == {"error": "evidence could not be issued"}
    finally:
        http_server.close()
        grpc_server.grpc_server.stop(None).wait(5)


def test_grpc_undecodable_request_is_invalid_argument(service):
    # Was INTERNAL ("Exception deserializing request!"), grpcio's own answer.
    method = "/verify.API/GetAttestation"
    with grpc.insecure_channel(service.grpc_target) as channel, pytest.raises(grpc.RpcError) as bad:
        channel.unary_unary(method)(b"\x0a\x10truncated", timeout=30)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert service.metrics.requests(method, "INVALID_ARGUMENT") == 1
