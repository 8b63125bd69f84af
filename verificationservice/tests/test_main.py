"""The real ``constellation-verificationservice`` command as a subprocess, with a swtpm."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from constellation.attestation.evidence import VERIFY_USER_DATA_LABEL
from constellation.proto import verify_pb2, verify_pb2_grpc

from .conftest import ak_certificate

MODULE = "constellation.verificationservice"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", MODULE, *args], capture_output=True, text=True, timeout=60
    )


def test_help_has_examples():
    result = _run("--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout
    assert "--tpm" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tpm", "nonsense"], "--tpm must be a TCTI"),
        (["--tpm", "swtpm:port=1", "--variant", "azure-tdx"], "not supported"),
        (["--tpm", "swtpm:port=1", "--event-log", "/nonexistent/log"], "not a readable file"),
        (["--tpm", "swtpm:port=1", "--ak-certificate-file", "/nonexistent/ak"], "No such file"),
    ],
)
def test_bad_configuration_exits_2_without_traceback(args, message):
    result = _run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.swtpm
def test_serves_both_transports_then_drains_on_sigterm(swtpm, run_service, validator_for, tmp_path):

    certificate = tmp_path / "ak-cert.der"
    certificate.write_bytes(ak_certificate(swtpm.tcti))
    validator = validator_for(swtpm.tcti)
    service = run_service(
        MODULE,
        *("--tpm", swtpm.tcti, "--listen", "127.0.0.1"),
        *("--ak-certificate-file", str(certificate)),
        *("--grpc-port", "0", "--http-port", "0", "--metrics-port", "0"),
    )
    started = service.wait_for_event("service.started")
    nonce = os.urandom(32)
    with grpc.insecure_channel(f"127.0.0.1:{started['grpc_port']}") as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="verify.API"), timeout=10
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        answer = verify_pb2_grpc.APIStub(channel).GetAttestation(
            verify_pb2.GetAttestationRequest(nonce=nonce), timeout=30
        )
    assert validator.validate(answer.attestation, nonce) == VERIFY_USER_DATA_LABEL

    query = base64.urlsafe_b64encode(nonce).decode()
    url = f"http://127.0.0.1:{started['http_port']}/?nonce={query}"
    with urllib.request.urlopen(url, timeout=30) as response:
        document = base64.b64decode(json.loads(response.read())["data"])
    assert validator.validate(document, nonce) == VERIFY_USER_DATA_LABEL

    metrics_url = f"http://127.0.0.1:{started['metrics_port']}/metrics"
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    assert "constellation_attestation_seconds_count" in text
    assert 'outcome="200"' in text

    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(30) == 0
    stopped = service.wait_for_event("service.stopped")
    assert stopped["level"] == "info"
    assert all(json.loads(line) for line in service.drain())
