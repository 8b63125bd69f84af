"""The real ``constellation-keyservice`` command as a subprocess: mutual TLS on the gRPC port,
plaintext health only on the health port, and clear start-up errors for missing TLS files."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from constellation.cli.servicepki import ServicePKI
from constellation.joinservice.keys import KeyServiceClient, KeyServiceTLS, keyservice_channel
from constellation.proto import kms_pb2, kms_pb2_grpc

MODULE = "constellation.keyservice"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", MODULE, *args], capture_output=True, text=True, timeout=60
    )


def tls_args(files: dict[str, Path]) -> tuple[str, ...]:
    return (
        f"--tls-cert-file={files['tls.crt']}",
        f"--tls-key-file={files['tls.key']}",
        f"--client-ca-file={files['ca.crt']}",
    )


def get_key(channel: grpc.Channel) -> kms_pb2.GetDataKeyResponse:
    return kms_pb2_grpc.APIStub(channel).GetDataKey(
        kms_pb2.GetDataKeyRequest(data_key_id="disk", length=32), timeout=10
    )


def test_help_has_examples():
    result = _run("--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout
    for flag in (
        "--master-secret-file",
        "--tls-cert-file",
        "--tls-key-file",
        "--client-ca-file",
        "--health-port",
    ):
        assert flag in result.stdout


@pytest.mark.parametrize(
    ("key", "salt", "message"),
    [(b"k" * 15, b"s" * 32, "master key must be at least 16"), (b"k" * 32, b"s" * 31, "salt")],
)
def test_refuses_short_secrets_without_traceback(secret_files, tls_files, key, salt, message):
    key_file, salt_file = secret_files(key, salt)
    result = _run(
        "--master-secret-file", str(key_file), "--salt-file", str(salt_file), *tls_args(tls_files)
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file_is_a_clear_error(tmp_path, tls_files):
    result = _run(
        *("--master-secret-file", str(tmp_path / "nope"), "--salt-file", str(tmp_path / "nope")),
        *tls_args(tls_files),
    )
    assert result.returncode == 2
    assert "cannot read master secret file" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("flag", ["--tls-cert-file", "--tls-key-file", "--client-ca-file"])
def test_tls_flags_are_required(secret_files, tls_files, flag):
    """No TLS, no service: there is no plaintext mode to fall back to."""
    key_file, salt_file = secret_files(b"\x11" * 32, b"\x22" * 32)
    args = [a for a in tls_args(tls_files) if not a.startswith(flag + "=")]
    result = _run("--master-secret-file", str(key_file), "--salt-file", str(salt_file), *args)
    assert result.returncode == 2
    assert "required" in result.stderr
    assert flag in result.stderr


@pytest.mark.parametrize(
    ("name", "what"),
    [("tls.crt", "TLS certificate"), ("tls.key", "TLS key"), ("ca.crt", "client CA")],
)
def test_missing_tls_file_is_named(secret_files, tls_files, name, what):
    key_file, salt_file = secret_files(b"\x11" * 32, b"\x22" * 32)
    tls_files[name].unlink()
    result = _run(
        "--master-secret-file", str(key_file), "--salt-file", str(salt_file), *tls_args(tls_files)
    )
    assert result.returncode == 2
    assert f"cannot read {what} file {tls_files[name]}" in result.stderr
    assert "Traceback" not in result.stderr


def test_mismatched_tls_files_are_refused_without_showing_the_key(
    secret_files, tls_files, service_pki: ServicePKI
):
    """tls.key of the JoinService's bundle: the failed check is named, the key is not shown."""
    key_file, salt_file = secret_files(b"\x11" * 32, b"\x22" * 32)
    tls_files["tls.key"].write_bytes(service_pki.joinservice_client.key_pem)
    result = _run(
        "--master-secret-file", str(key_file), "--salt-file", str(salt_file), *tls_args(tls_files)
    )
    assert result.returncode == 2
    assert "tls.key: expected the private key of tls.crt" in result.stderr
    assert "Traceback" not in result.stderr
    assert service_pki.joinservice_client.key_pem.decode().splitlines()[1] not in result.stderr


def test_serves_then_shuts_down_gracefully_on_sigterm(
    run_service, secret_files, tls_files, service_pki: ServicePKI
):
    key_file, salt_file = secret_files(b"\x11" * 32, b"\x22" * 32)
    service = run_service(
        MODULE,
        *("--master-secret-file", str(key_file), "--salt-file", str(salt_file)),
        *tls_args(tls_files),
        *("--listen", "127.0.0.1", "--port", "0", "--health-port", "0", "--metrics-port", "0"),
    )
    started = service.wait_for_event("service.started")
    assert started["transport"] == "mutual-tls"
    target = f"127.0.0.1:{started['grpc_port']}"
    # The kubelet's view: plaintext health on the health port, and nothing else there.
    with grpc.insecure_channel(f"127.0.0.1:{started['health_port']}") as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as not_here:
            get_key(channel)
        assert not_here.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # Any other process's view: plaintext to the gRPC port gets nothing.
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as plaintext:
        get_key(channel)
    assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE
    # The JoinService's view: its own client, with the certificate the CLI issued it.
    client = service_pki.joinservice_client
    tls = KeyServiceTLS.load(client.ca_pem, client.cert_pem, client.key_pem)
    with keyservice_channel(target, tls) as channel:
        key = KeyServiceClient(channel).get_data_key("disk", 32).reveal()
    assert len(key) == 32

    metrics_url = f"http://127.0.0.1:{started['metrics_port']}/metrics"
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        metrics = response.read().decode()
    assert 'constellation_requests_total{method="/kms.API/GetDataKey",outcome="OK"' in metrics

    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(30) == 0
    service.wait_for_event("service.stopped")
    log = service.drain()
    records = [json.loads(line) for line in log]  # every stderr line is a JSON object
    assert any(r["event"] == "keyservice.data_key_issued" for r in records)
    text = "\n".join(log)
    for secret in (
        key.hex(),
        (b"\x11" * 32).hex(),
        service_pki.keyservice_server.key_pem.decode().splitlines()[1],
    ):
        assert secret not in text


def test_port_in_use_is_a_clear_error(secret_files, tls_files):
    key_file, salt_file = secret_files(b"\x11" * 32, b"\x22" * 32)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(
            *("--master-secret-file", str(key_file), "--salt-file", str(salt_file)),
            *tls_args(tls_files),
            *("--listen", "127.0.0.1", "--port", str(port), "--metrics-port", "0"),
        )
    assert result.returncode == 2
    assert "service.listen_failed" in result.stderr
    assert "Traceback" not in result.stderr
