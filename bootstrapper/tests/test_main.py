"""The bootstrapper as a process: wiring, init over aTLS, SIGTERM, refused configuration."""

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

from constellation.attestation.kdf import derive_cluster_id, derive_measurement_secret
from constellation.attestation.measurements import Measurement, Measurements
from constellation.attestation.swtpm import Swtpm
from constellation.bootstrapper.initsecret import InitSecret, hash_init_secret
from constellation.bootstrapper.metadata import InstanceMetadata, Role, write_metadata_file
from constellation.bootstrapper.testing import (
    INIT_SECRET,
    call_init,
    component_for,
    init_request,
    require_cryptsetup,
)

START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def _write_node(tmp_path: Path, swtpm: Swtpm, port: int) -> Path:
    require_cryptsetup()
    with (tmp_path / "disk.img").open("wb") as handle:
        handle.truncate(20 * 1024 * 1024)
    write_metadata_file(
        tmp_path / "metadata.json",
        InstanceMetadata(
            name="node-0",
            role=Role.CONTROL_PLANE,
            private_ip="127.0.0.1",
            init_secret_hash=hash_init_secret(InitSecret(INIT_SECRET), cost=4),
            control_plane_endpoints=(),
        ),
    )
    (tmp_path / "joinservice-measurements.json").write_text(
        Measurements({4: Measurement(b"\x04" * 32)}).to_json()
    )
    config = {
        "metadata_path": str(tmp_path / "metadata.json"),
        "state_disk_path": str(tmp_path / "disk.img"),
        "state_dir": str(tmp_path / "state"),
        "install_root": str(tmp_path / "root"),
        "tpm_tcti": swtpm.tcti,
        "init_port": port,
        "join_measurements_path": str(tmp_path / "joinservice-measurements.json"),
        "join_retry": {"initial_delay_s": 0.1, "max_delay_s": 0.5, "max_attempts": 3},
        "fast_luks_pbkdf": True,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


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
    port = _free_port()
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
