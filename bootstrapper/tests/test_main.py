"""The bootstrapper as a process: wiring, init over aTLS, SIGTERM, refused configuration.

The node is what mini mode makes: a swtpm whose AK the test platform CA certified as the
control-plane node ``node-0`` (``ak_certificate_path``), a firmware event log
(``event_log_path``), and the platform's root to check the JoinService's AK against
(``platform_roots_path``, required).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from constellation.attestation.kdf import derive_cluster_id, derive_measurement_secret
from constellation.attestation.swtpm import Swtpm
from constellation.attestation.testing.platform import (
    BOOT_CHAIN,
    measure_boot,
)
from constellation.bootstrapper.__main__ import build_node
from constellation.bootstrapper.config import ConfigError, config_from_mapping
from constellation.bootstrapper.testing import (
    INIT_SECRET,
    call_init,
    component_for,
    free_port,
    init_request,
    write_node_files,
)

START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60


def _run(args: list[str], stderr: object = subprocess.PIPE) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "constellation.bootstrapper", *args],
        stdout=subprocess.DEVNULL,
        stderr=stderr,  # type: ignore[arg-type]
    )


def test_refused_configuration_exits_1_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"tpm_tcti": "swtpm:port=1", "bogus": 1}))
    process = _run(["--config", str(config)])
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert b"unknown configuration keys: bogus" in err
    assert b"Traceback" not in err


def _node_config(tmp_path: Path, swtpm: Swtpm, port: int) -> dict[str, object]:
    """The node's files as mini mode writes them, and the configuration naming them."""
    config = write_node_files(tmp_path, swtpm.tcti, port)
    (tmp_path / "eventlog.bin").write_bytes(measure_boot(swtpm.tcti, BOOT_CHAIN))
    return config


def _write_node(tmp_path: Path, swtpm: Swtpm, port: int) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(_node_config(tmp_path, swtpm, port)))
    return path


@pytest.mark.swtpm
def test_platform_roots_are_required(tmp_path: Path, swtpm: Swtpm) -> None:
    """Without roots the node could not tell the JoinService's vTPM from a software key."""
    config = _node_config(tmp_path, swtpm, free_port())
    del config["platform_roots_path"]
    with pytest.raises(ConfigError, match="platform_roots_path is required"):
        build_node(config_from_mapping(config))


@pytest.mark.swtpm
@pytest.mark.parametrize("unreadable", ["nowhere.pem", "state-dir"])
def test_an_unreadable_platform_roots_file_is_refused(
    tmp_path: Path, swtpm: Swtpm, unreadable: str
) -> None:
    config = _node_config(tmp_path, swtpm, free_port())
    (tmp_path / "state-dir").mkdir()
    config["platform_roots_path"] = str(tmp_path / unreadable)
    with pytest.raises(ConfigError, match="cannot read platform roots"):
        build_node(config_from_mapping(config))


def _pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


@pytest.mark.swtpm
@pytest.mark.parametrize(
    ("roots", "message"),
    [
        # A likely mistake: the node's own AK certificate (a leaf) instead of the platform CA.
        (lambda tmp_path: _pem((tmp_path / "ak-cert.der").read_bytes()), "not a CA"),
        (lambda tmp_path: b"", "no certificates"),
        (
            lambda tmp_path: b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "does not parse",
        ),
    ],
    ids=["leaf-certificate", "empty", "garbage"],
)
def test_unusable_platform_roots_are_refused(
    tmp_path: Path, swtpm: Swtpm, roots: object, message: str
) -> None:
    config = _node_config(tmp_path, swtpm, free_port())
    (tmp_path / "platform-roots.pem").write_bytes(roots(tmp_path))  # type: ignore[operator]
    with pytest.raises(ConfigError, match=message) as refused:
        build_node(config_from_mapping(config))
    assert "platform root" in str(refused.value)
    assert not (tmp_path / "state").exists()  # refused before the node touched anything


def _wait_listening(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, "the bootstrapper exited during start-up"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError("the bootstrapper did not start listening")


@pytest.fixture
def bootstrapper(tmp_path: Path, swtpm: Swtpm) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    config = _write_node(tmp_path, swtpm, port)
    # A file, not a pipe: a full pipe would block the process on logging.
    log = (tmp_path / "bootstrapper.log").open("wb")
    process = _run(["--config", str(config)], stderr=log)
    try:
        _wait_listening(process, port)
        yield process, f"127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        log.close()


@pytest.mark.swtpm
def test_process_serves_init_and_stops_on_sigterm(
    bootstrapper: tuple[subprocess.Popen[bytes], str], tmp_path: Path
) -> None:
    process, target = bootstrapper
    tool = tmp_path / "tool"
    tool.write_bytes(b"x")
    with pytest.raises(grpc.RpcError) as info:
        call_init(
            target, init_request([component_for("kubeadm", tool, "/bin/kubeadm")], secret=b"no")
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert info.value.received == []
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=STOP_TIMEOUT_S) == 0
    err = (tmp_path / "bootstrapper.log").read_bytes()
    assert b"init.refused" in err
    assert INIT_SECRET not in err
    assert b"Traceback" not in err


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.swtpm
@pytest.mark.kube
@pytest.mark.slow
def test_process_initializes_the_cluster(
    bootstrapper: tuple[subprocess.Popen[bytes], str],
    kubernetes_components,
    kubernetes_lock,
    tmp_path: Path,
) -> None:
    process, target = bootstrapper
    components = [
        component_for(name, kubernetes_components.path(name), f"/usr/local/bin/{name}")
        for name in ("kubeadm", "etcd", "kube-apiserver", "kube-controller-manager")
    ]
    request = init_request(components)
    request.kubernetes_version = kubernetes_lock.kubernetes_version
    *_, last = call_init(target, request)
    assert last.WhichOneof("kind") == "init_success"
    secret = derive_measurement_secret(request.master_secret, request.master_salt)
    assert last.init_success.cluster_id == derive_cluster_id(secret, request.measurement_salt)

    kubeconfig = tmp_path / "admin.conf"
    kubeconfig.write_bytes(last.init_success.kubeconfig)
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    api = k8s_config.new_client_from_config(config_file=str(kubeconfig))
    try:
        namespaces = k8s.CoreV1Api(api).list_namespace(_request_timeout=10)
        assert "kube-system" in [n.metadata.name for n in namespaces.items]
    finally:
        api.close()

    state = json.loads((tmp_path / "state" / "control-plane" / "controlplane.json").read_text())
    assert state  # the control plane recorded its ports
    children = [
        int(line.split()[0])
        for line in subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(process.pid)],
            capture_output=True,
            check=False,
            text=True,
        ).stdout.splitlines()
        if line.strip()
    ]
    assert children  # etcd, kube-apiserver, kube-controller-manager
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=STOP_TIMEOUT_S) == 0
    assert not any(_pid_alive(pid) for pid in children)
