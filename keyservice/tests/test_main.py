"""The real ``constellation-keyservice`` command as a subprocess."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from constellation.proto import kms_pb2, kms_pb2_grpc

MODULE = "constellation.keyservice"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", MODULE, *args], capture_output=True, text=True, timeout=60
    )


def test_help_has_examples():
    result = _run("--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout
    assert "--master-secret-file" in result.stdout


@pytest.mark.parametrize(
    ("key", "salt", "message"),
    [(b"k" * 15, b"s" * 32, "master key must be at least 16"), (b"k" * 32, b"s" * 31, "salt")],
)
def test_refuses_short_secrets_without_traceback(secret_files, key, salt, message):
    key_file, salt_file = secret_files(key, salt)
    result = _run("--master-secret-file", str(key_file), "--salt-file", str(salt_file))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file_is_a_clear_error(tmp_path):
    result = _run(
        "--master-secret-file", str(tmp_path / "nope"), "--salt-file", str(tmp_path / "nope")
    )
    assert result.returncode == 2
    assert "cannot read master secret file" in result.stderr
    assert "Traceback" not in result.stderr


def test_serves_then_shuts_down_gracefully_on_sigterm(run_service, secret_files):
    key_file, salt_file = secret_files(b"\x11" * 32, b"\x22" * 32)
    service = run_service(
        MODULE,
        *("--master-secret-file", str(key_file), "--salt-file", str(salt_file)),
        *("--listen", "127.0.0.1", "--port", "0", "--metrics-port", "0"),
    )
    started = service.wait_for_event("service.started")
    target = f"127.0.0.1:{started['grpc_port']}"
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        key = kms_pb2_grpc.APIStub(channel).GetDataKey(
            kms_pb2.GetDataKeyRequest(data_key_id="disk", length=32), timeout=10
        )
    metrics_url = f"http://127.0.0.1:{started['metrics_port']}/metrics"
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    assert 'constellation_requests_total{method="/kms.API/GetDataKey",outcome="OK"' in text

    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(30) == 0
    service.wait_for_event("service.stopped")
    log = service.drain()
    records = [json.loads(line) for line in log]  # every stderr line is a JSON object
    assert any(r["event"] == "keyservice.data_key_issued" for r in records)
    assert key.data_key.hex() not in "\n".join(log)


def test_port_in_use_is_a_clear_error(secret_files):
    key_file, salt_file = secret_files(b"\x11" * 32, b"\x22" * 32)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(
            *("--master-secret-file", str(key_file), "--salt-file", str(salt_file)),
            *("--listen", "127.0.0.1", "--port", str(port), "--metrics-port", "0"),
        )
    assert result.returncode == 2
    assert "service.listen_failed" in result.stderr
    assert "Traceback" not in result.stderr
