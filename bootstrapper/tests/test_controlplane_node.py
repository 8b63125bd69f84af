"""The first control-plane node as a Node, and its control plane across a full shutdown.

Real everything: swtpm vTPMs, a LUKS2 header, the pinned Kubernetes binaries (etcd,
kube-apiserver, controller manager) brought up by the real init server. A "reboot" is a fresh
vTPM (PCRs reset) for the same node files; the control plane restarts from its own PKI and etcd
data only after ``recoverproto.API/Recover`` proved the master secret.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from constellation.attestation import atls
from constellation.attestation.identity import Role
from constellation.attestation.kdf import derive_cluster_id, derive_measurement_secret
from constellation.attestation.measurements import Measurement, Measurements, pcr15_for_cluster_id
from constellation.attestation.nodelock import NodeLock
from constellation.attestation.swtpm import Swtpm
from constellation.attestation.testing.platform import BOOT_CHAIN, node_issuer, node_validator
from constellation.attestation.vtpm import open_tpm, read_pcrs
from constellation.bootstrapper.config import RetryPolicy
from constellation.bootstrapper.initserver import (
    ControlPlaneRestartError,
    InitServer,
    LocalControlPlane,
    RestartRecord,
)
from constellation.bootstrapper.joinclient import JoinClient
from constellation.bootstrapper.node import CommitPath, Node
from constellation.bootstrapper.recoveryserver import RecoveryServer
from constellation.bootstrapper.registration import CONTROL_PLANE_LABEL, KubeletFiles
from constellation.bootstrapper.statedisk import DiskKey
from constellation.bootstrapper.testing import (
    boot_log,
    call_init,
    component_for,
    init_request,
    make_node,
    serve_init,
)
from constellation.proto import recover_pb2, recover_pb2_grpc

RETRY = RetryPolicy(
    initial_delay_s=0.05, max_delay_s=0.1, max_attempts=3, total_timeout_s=10, rpc_timeout_s=5
)
NODE = "node-0"


def _pcr15(tcti: str) -> bytes:
    with open_tpm(tcti) as esapi:
        _, values = read_pcrs(esapi, (15,))
    return values[15]


def _as_node(server: str, files: KubeletFiles, method: str, path: str, body: Any = None) -> Any:
    """One API request authenticated with the node's own kubelet certificate."""
    context = ssl.create_default_context(cafile=str(files.ca_path))
    context.load_cert_chain(str(files.cert_path), str(files.key_path))
    request = urllib.request.Request(  # noqa: S310 - our own https loopback server
        server + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def _assert_registered_as_itself(plane: LocalControlPlane, files: KubeletFiles) -> None:
    assert plane.plane is not None
    node = plane.plane.request("GET", f"/api/v1/nodes/{NODE}")
    assert node["metadata"]["labels"][CONTROL_PLANE_LABEL] == ""
    review = _as_node(
        plane.plane.server,
        files,
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    user = review["status"]["userInfo"]
    assert user["username"] == f"system:node:{NODE}"
    assert "system:nodes" in user["groups"]


def test_restart_refuses_a_binary_changed_since_init(tmp_path: Path) -> None:
    binary = tmp_path / "etcd"
    binary.write_bytes(b"#!/bin/sh\nexit 0\n")
    record = RestartRecord(
        kubernetes_version="v1.31.1",
        node_name=NODE,
        node_ip="127.0.0.1",
        binaries={name: (binary, "0" * 64) for name in ("kubeadm", "etcd", "kube-apiserver")},
    )
    plane = LocalControlPlane(tmp_path / "cp")
    (tmp_path / "cp").mkdir()
    plane.restart_record_path.write_bytes(record.to_json())
    assert plane.is_installed()
    with pytest.raises(ControlPlaneRestartError, match="changed since init"):
        plane.restart()
    assert plane.plane is None


def test_restart_without_a_record_is_refused(tmp_path: Path) -> None:
    plane = LocalControlPlane(tmp_path / "cp")
    assert not plane.is_installed()
    with pytest.raises(ControlPlaneRestartError, match="was this node initialized"):
        plane.restart()


def test_corrupt_restart_record_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "restart.json"
    path.write_text('{"version": 1, "binaries": {}}')
    with pytest.raises(ControlPlaneRestartError, match="corrupt"):
        RestartRecord.load(path)


@pytest.mark.swtpm
@pytest.mark.kube
@pytest.mark.slow
def test_init_registers_the_node_and_recovery_restarts_its_control_plane(
    tmp_path: Path,
    swtpm_factory: Callable[[int], list[Swtpm]],
    kubernetes_components: Any,
    kubernetes_lock: Any,
) -> None:
    first_boot, rebooted_tpm = swtpm_factory(2)
    node = make_node(tmp_path / "node", first_boot, boot=BOOT_CHAIN)
    files = KubeletFiles(node.directory / "state" / "kubelet")
    request = init_request(
        [
            component_for(name, kubernetes_components.path(name), f"/usr/local/bin/{name}")
            for name in ("kubeadm", "etcd", "kube-apiserver", "kube-controller-manager")
        ]
    )
    request.kubernetes_version = kubernetes_lock.kubernetes_version
    cluster_id = derive_cluster_id(
        derive_measurement_secret(request.master_secret, request.master_salt),
        request.measurement_salt,
    )
    plane_dir = tmp_path / "controlplane"
    plane = LocalControlPlane(plane_dir, kubelet_files=files)
    try:
        with serve_init(node, plane) as target:
            responses = call_init(target, request)
        assert responses[-1].WhichOneof("kind") == "init_success"
        # 1. The first control-plane node is a Node, authenticated as itself.
        _assert_registered_as_itself(plane, files)
        assert plane.is_installed()
    finally:
        plane.stop()  # full-cluster shutdown

    # 2./3. Reboot: PCRs reset (fresh vTPM), no JoinService anywhere. The firmware measures
    # the same image again; the platform certifies the vTPM's AK for the same node.
    assert _pcr15(rebooted_tpm.tcti) == bytes(32)
    rebooted_log = boot_log(rebooted_tpm, BOOT_CHAIN)
    rebooted_issuer = node_issuer(
        rebooted_tpm.tcti, node.name, Role.CONTROL_PLANE, event_log=rebooted_log
    )
    lock = NodeLock(rebooted_tpm.tcti)
    restarted = LocalControlPlane(plane_dir, kubelet_files=files)
    served: list[str] = []

    def serve_recovery(servicer: RecoveryServer) -> Callable[[float], None]:
        server = atls.AttestedServer(rebooted_issuer)
        recover_pb2_grpc.add_APIServicer_to_server(servicer, server.grpc_server)
        port = server.add_port("127.0.0.1:0")
        server.start()
        served.append(f"127.0.0.1:{port}")
        return lambda grace: server.stop(grace).wait(grace + 1)

    def make_join_client(stop: threading.Event) -> JoinClient:
        return JoinClient(
            metadata=node.metadata,  # lists no JoinService: every rejoin attempt fails
            connect=lambda target, cluster_id=None: atls.connect(target, [], timeout=1),
            node_lock=lock,
            state_disk=node.disk,
            installer=node.installer,
            kubelet_files=files,
            node_state_path=node.node_state_path,
            retry=RETRY,
            stop=stop,
        )

    def no_init(key: DiskKey, callbacks: object) -> InitServer:
        raise AssertionError("an initialized node must not serve Init")

    supervisor = Node(
        node_lock=lock,
        state_disk=node.disk,
        node_state_path=node.node_state_path,
        make_init_server=no_init,  # type: ignore[arg-type]
        serve_init=lambda servicer: lambda grace: None,
        make_join_client=make_join_client,
        control_plane=restarted,
        serve_recovery=serve_recovery,
    )
    outcomes: list[object] = []
    runner = threading.Thread(target=lambda: outcomes.append(supervisor.run()), daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while not served:
            assert time.monotonic() < deadline, "the node never served recovery"
            assert runner.is_alive(), f"the node stopped: {outcomes}"
            time.sleep(0.05)
        assert restarted.plane is None  # nothing runs before the master secret came
        # The node re-marked PCR 15 from its node state so the CLI can check its cluster.
        expected = Measurements({15: Measurement(pcr15_for_cluster_id(cluster_id))})
        with atls.connect(served[0], [node_validator(expected)], timeout=30) as channel:
            stub = recover_pb2_grpc.APIStub(channel.channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Recover(
                    recover_pb2.RecoverMessage(master_secret=b"x" * 32, master_salt=b"s" * 32),
                    timeout=60,
                )
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert restarted.plane is None
            response = stub.Recover(
                recover_pb2.RecoverMessage(
                    master_secret=request.master_secret, master_salt=request.master_salt
                ),
                timeout=300,
            )
        assert response.disk_uuid == node.disk.uuid()
        runner.join(timeout=30)
        assert [getattr(o, "path", o) for o in outcomes] == [CommitPath.RECOVERED]
        assert _pcr15(rebooted_tpm.tcti) == pcr15_for_cluster_id(cluster_id)
        # The same cluster is back: same CA, same etcd data (the Node object survived).
        _assert_registered_as_itself(restarted, files)
    finally:
        supervisor.shutdown.set()
        runner.join(timeout=30)
        restarted.stop()
