"""``constellation recover`` against the real recovery server of a rebooted node.

The node is real (swtpm vTPM with a measured "firmware" event log, a LUKS2 header keyed to the
cluster's disk key, persisted node state) and serves ``recoverproto.API`` over aTLS as its
bootstrapper does after a full-cluster shutdown. Its AK is what the platform made of it (by
default certified as a control plane by the test platform CA the configuration trusts). The
servicer records every request it receives, so a test can show that the CLI sent nothing to a
node it refused.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from constellation.attestation import atls
from constellation.attestation.identity import Role
from constellation.attestation.identity.ca import PlatformCA
from constellation.attestation.kdf import derive_cluster_id, derive_key, derive_measurement_secret
from constellation.attestation.measurements import Measurement, Measurements, pcr15_for_cluster_id
from constellation.attestation.swtpm import Swtpm
from constellation.attestation.testing.platform import cached_platform_ca, provision_node
from constellation.attestation.vtpm import (
    VtpmIssuer,
    firmware_measure,
    open_tpm,
    provision_ak,
    read_pcrs,
)
from constellation.bootstrapper.metadata import Endpoint
from constellation.bootstrapper.nodestate import NodeState, save_node_state
from constellation.bootstrapper.recoveryserver import RecoveryServer
from constellation.bootstrapper.statedisk import DiskKey
from constellation.bootstrapper.testing import NodeParts, make_node
from constellation.cli.workspace import ClusterState, MasterSecret, Workspace
from constellation.proto import recover_pb2, recover_pb2_grpc

pytestmark = pytest.mark.swtpm

MEASURED_PCRS = (4, 9, 11)
NODE_NAME = "mini-cp-0"


class RecordingRecoveryServer(RecoveryServer):
    """The real servicer; ``received`` counts the requests that reached it."""

    received: list[recover_pb2.RecoverMessage]

    def Recover(self, request: Any, context: Any) -> Any:
        self.received.append(request)
        return super().Recover(request, context)


@dataclass
class RecoveringNode:
    workspace: Path
    parts: NodeParts
    cluster_id: bytes
    disk_key: DiskKey
    servicer: RecordingRecoveryServer
    restarts: list[DiskKey] = field(default_factory=list)


def _pcr15(tcti: str) -> bytes:
    with open_tpm(tcti) as esapi:
        _, values = read_pcrs(esapi, (15,))
    return values[15]


@pytest.fixture
def ak_certificate(swtpm: Swtpm, request: pytest.FixtureRequest) -> bytes | None:
    """The AK certificate the node's platform gave it. Param: ``"control-plane"`` (default),
    ``"worker"``, ``"uncertified"`` (a TPM-resident AK no platform vouched for), or
    ``"other-platform"`` (certified as a control plane by a CA the config does not trust)."""
    how = getattr(request, "param", "control-plane")
    if how == "uncertified":
        provision_ak(swtpm.tcti)
        return None
    ca = PlatformCA.generate("another platform CA") if how == "other-platform" else None
    role = Role.WORKER if how == "worker" else Role.CONTROL_PLANE
    return provision_node(swtpm.tcti, ca or cached_platform_ca(), NODE_NAME, role)


@pytest.fixture
def node(
    swtpm: Swtpm,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    ak_certificate: bytes | None,
    mini_config: Any,
) -> Iterator[RecoveringNode]:
    """A rebooted node of the workspace's cluster (param ``"foreign"``: marked for another)."""
    log = b""
    for pcr in MEASURED_PCRS:
        log = firmware_measure(swtpm.tcti, log, pcr, os.urandom(32), f"image part {pcr}".encode())
    with open_tpm(swtpm.tcti) as esapi:
        _, pcrs = read_pcrs(esapi)
    parts = make_node(tmp_path / "node", swtpm)

    workspace = Workspace(tmp_path / "workspace")
    (tmp_path / "workspace").mkdir()
    master = MasterSecret.generate()
    workspace.save_master_secret(master)
    measurement_salt = secrets.token_bytes(32)
    cluster_id = derive_cluster_id(
        derive_measurement_secret(master.key, master.salt), measurement_salt
    )
    uuid = parts.disk.uuid()
    disk_key = DiskKey(derive_key(master.key, master.salt, "key-" + uuid, 32))
    parts.disk.rekey(parts.initial_key, disk_key)
    state = NodeState(cluster_id, measurement_salt, Role.CONTROL_PLANE, uuid)
    save_node_state(parts.node_state_path, state)
    # What the node supervisor does before it serves recovery: re-mark PCR 15 from its state.
    foreign = getattr(request, "param", "own") == "foreign"
    assert parts.lock.try_lock(secrets.token_bytes(32) if foreign else cluster_id)

    restarts: list[DiskKey] = []
    servicer = RecordingRecoveryServer(
        node_state=state, state_disk=parts.disk, node_lock=parts.lock, on_recovered=restarts.append
    )
    servicer.received = []
    issuer = VtpmIssuer(swtpm.tcti, event_log=lambda: log, ak_certificate=ak_certificate)
    server = atls.AttestedServer(issuer)
    recover_pb2_grpc.add_APIServicer_to_server(servicer, server.grpc_server)
    port = server.add_port("127.0.0.1:0")
    server.start()

    measurements = Measurements({i: Measurement(pcrs[i]) for i in MEASURED_PCRS})
    workspace.save_config(mini_config(measurements), overwrite=False)
    workspace.save_state(
        ClusterState(
            name="mini",
            cluster_id=cluster_id,
            measurement_salt=measurement_salt,
            init_endpoint=Endpoint("127.0.0.1", port),
        )
    )
    try:
        yield RecoveringNode(workspace.root, parts, cluster_id, disk_key, servicer, restarts)
    finally:
        server.stop(None).wait(5)


def test_node_of_this_cluster_is_recovered(invoke: Any, node: RecoveringNode) -> None:
    result = invoke(node.workspace, "recover", "-o", "json")
    assert result.code == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer == {
        "endpoint": answer["endpoint"],
        "diskUUID": node.parts.disk.uuid(),
        "recovered": True,
        "servicesResumed": False,  # not a mini cluster
    }
    assert node.restarts == [node.disk_key]
    assert _pcr15(node.parts.tpm.tcti) == pcr15_for_cluster_id(node.cluster_id)
    assert len(node.servicer.received) == 1


@pytest.mark.parametrize("node", ["foreign"], indirect=True)
def test_node_of_another_cluster_is_refused_before_the_secret_is_sent(
    invoke: Any, node: RecoveringNode
) -> None:
    result = invoke(node.workspace, "recover")
    assert result.code == 1
    assert "pcr[15]" in result.stderr
    assert node.servicer.received == []  # the master secret never left the CLI
    assert node.restarts == []


def test_node_with_other_measurements_is_refused_before_the_secret_is_sent(
    invoke: Any, node: RecoveringNode
) -> None:
    workspace = Workspace(node.workspace)
    config = workspace.load_config()
    tampered = Measurements(
        {i: Measurement(bytes(32)) for i in config.attestation.parsed_measurements()}
    )
    workspace.save_config(config.with_measurements(tampered), overwrite=True)
    result = invoke(node.workspace, "recover")
    assert result.code == 1
    assert "pcr[4]" in result.stderr
    assert node.servicer.received == []


@pytest.mark.parametrize(
    ("ak_certificate", "check"),
    [
        ("worker", "identity.role"),
        ("uncertified", "ak.certificate"),
        ("other-platform", "ak.certificate.chain"),
    ],
    indirect=["ak_certificate"],
)
def test_node_not_certified_as_a_control_plane_is_refused_before_the_secret_is_sent(
    invoke: Any, node: RecoveringNode, check: str
) -> None:
    result = invoke(node.workspace, "recover")
    assert result.code == 1
    assert f"{check}:" in result.stderr
    assert "Traceback" not in result.stderr
    assert node.servicer.received == []  # the master secret never left the CLI
    assert node.restarts == []


def test_wrong_master_secret_is_refused_by_the_node(invoke: Any, node: RecoveringNode) -> None:
    workspace = Workspace(node.workspace)
    workspace.save_master_secret(MasterSecret.generate(), overwrite=True)
    result = invoke(node.workspace, "recover")
    assert result.code == 1
    assert "PERMISSION_DENIED" in result.stderr
    assert "master secret" in result.stderr
    assert node.restarts == []
    node.parts.disk.check_key(node.disk_key)  # the disk is unchanged


def test_secrets_never_reach_the_output(invoke: Any, node: RecoveringNode) -> None:
    master = Workspace(node.workspace).load_master_secret()
    result = invoke(node.workspace, "--debug", "recover")
    assert result.code == 0, result.stderr
    for value in (master.key, master.salt):
        assert value.hex() not in result.stdout + result.stderr


def test_uninitialized_workspace_is_refused(invoke: Any, node: RecoveringNode) -> None:
    Workspace(node.workspace).save_state(ClusterState(name="mini"))
    result = invoke(node.workspace, "recover")
    assert result.code == 1
    assert "no cluster ID" in result.stderr
    assert node.servicer.received == []


def test_unreachable_node_is_a_clear_error(invoke: Any, node: RecoveringNode) -> None:
    result = invoke(node.workspace, "recover", "-e", "127.0.0.1:1")
    assert result.code == 1
    assert "Traceback" not in result.stderr
