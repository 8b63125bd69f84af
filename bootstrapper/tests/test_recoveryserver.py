"""recoverproto.API over aTLS on a real node (swtpm vTPM, LUKS2 header via cryptsetup).

The node is one that initialized a cluster and then rebooted: its disk is keyed to the
cluster's disk key, its node state is persisted, and its vTPM is fresh (PCR 15 reset to zero).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from constellation.attestation import atls
from constellation.attestation.evidence import Validator
from constellation.attestation.identity import Role
from constellation.attestation.measurements import Measurement, Measurements, pcr15_for_cluster_id
from constellation.attestation.swtpm import Swtpm
from constellation.attestation.testing.platform import node_validator
from constellation.attestation.vtpm import open_tpm, read_pcrs
from constellation.bootstrapper.errors import BootstrapperError
from constellation.bootstrapper.nodestate import NodeState, load_node_state, save_node_state
from constellation.bootstrapper.recoveryserver import RecoveryServer
from constellation.bootstrapper.statedisk import DiskKey
from constellation.bootstrapper.testing import ZERO_PCR, ClusterSecrets, NodeParts, make_node
from constellation.proto import recover_pb2, recover_pb2_grpc

pytestmark = pytest.mark.swtpm


def _pcr15(tcti: str) -> bytes:
    with open_tpm(tcti) as esapi:
        _, values = read_pcrs(esapi, (15,))
    return values[15]


class RebootedNode:
    def __init__(self, node: NodeParts, secrets: ClusterSecrets) -> None:
        self.node = node
        self.secrets = secrets
        uuid = node.disk.uuid()
        self.disk_key = DiskKey(secrets.disk_key(uuid))
        node.disk.rekey(node.initial_key, self.disk_key)
        self.state = NodeState(
            secrets.cluster_id, secrets.measurement_salt, Role.CONTROL_PLANE, uuid
        )
        save_node_state(node.node_state_path, self.state)
        self.restarts: list[DiskKey] = []

    def server(self, state: NodeState | None = None) -> RecoveryServer:
        return RecoveryServer(
            node_state=state or self.state,
            state_disk=self.node.disk,
            node_lock=self.node.lock,
            on_recovered=self.restarts.append,
        )

    def assert_untouched(self) -> None:
        assert _pcr15(self.node.tpm.tcti) == ZERO_PCR
        assert not self.node.lock.is_initialized()
        self.node.disk.check_key(self.disk_key)
        assert load_node_state(self.node.node_state_path) == self.state
        assert self.restarts == []


@pytest.fixture
def rebooted(tmp_path: Path, swtpm: Swtpm) -> RebootedNode:
    return RebootedNode(make_node(tmp_path / "node", swtpm), ClusterSecrets())


@contextmanager
def serve(node: NodeParts, servicer: RecoveryServer) -> Iterator[str]:
    server = atls.AttestedServer(node.issuer())
    recover_pb2_grpc.add_APIServicer_to_server(servicer, server.grpc_server)
    port = server.add_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None).wait(5)


def _any_pcr15() -> Validator:
    return node_validator(Measurements({15: Measurement(ZERO_PCR, warn_only=True)}))


def _recover(target: str, secret: bytes, salt: bytes) -> recover_pb2.RecoverResponse:
    with atls.connect(target, [_any_pcr15()], timeout=30) as channel:
        request = recover_pb2.RecoverMessage(master_secret=secret, master_salt=salt)
        response: recover_pb2.RecoverResponse = recover_pb2_grpc.APIStub(channel.channel).Recover(
            request, timeout=60
        )
        return response


def test_wrong_master_secret_is_denied_and_nothing_changes(rebooted: RebootedNode) -> None:
    with serve(rebooted.node, rebooted.server()) as target, pytest.raises(grpc.RpcError) as info:
        _recover(target, b"W" * 32, rebooted.secrets.master_salt)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "does not open" in info.value.details()
    rebooted.assert_untouched()


def test_wrong_master_salt_is_denied_and_nothing_changes(rebooted: RebootedNode) -> None:
    with serve(rebooted.node, rebooted.server()) as target, pytest.raises(grpc.RpcError) as info:
        _recover(target, rebooted.secrets.master_secret, b"X" * 32)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    rebooted.assert_untouched()


@pytest.mark.parametrize(
    ("secret", "salt", "field"),
    [(b"short", b"S" * 32, "master_secret"), (b"M" * 32, b"S" * 31, "master_salt")],
)
def test_malformed_request_is_invalid_argument(
    rebooted: RebootedNode, secret: bytes, salt: bytes, field: str
) -> None:
    with serve(rebooted.node, rebooted.server()) as target, pytest.raises(grpc.RpcError) as info:
        _recover(target, secret, salt)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in info.value.details()
    rebooted.assert_untouched()


def test_secret_that_does_not_reproduce_the_cluster_id_is_denied(rebooted: RebootedNode) -> None:
    """The secret opens the disk, but the node state names another cluster (its salt)."""
    foreign = replace(rebooted.state, measurement_salt=bytes(32))
    with (
        serve(rebooted.node, rebooted.server(foreign)) as target,
        pytest.raises(grpc.RpcError) as info,
    ):
        _recover(target, rebooted.secrets.master_secret, rebooted.secrets.master_salt)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "cluster ID" in info.value.details()
    rebooted.assert_untouched()


def test_disk_of_another_uuid_is_refused(rebooted: RebootedNode) -> None:
    other = replace(rebooted.state, disk_uuid="00000000-0000-4000-8000-000000000000")
    with (
        serve(rebooted.node, rebooted.server(other)) as target,
        pytest.raises(grpc.RpcError) as info,
    ):
        _recover(target, rebooted.secrets.master_secret, rebooted.secrets.master_salt)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "differs from the recorded" in info.value.details()
    rebooted.assert_untouched()


def test_recover_remarks_pcr15_restarts_once_and_refuses_a_second_time(
    rebooted: RebootedNode,
) -> None:
    servicer = rebooted.server()
    secrets = rebooted.secrets
    with serve(rebooted.node, servicer) as target:
        response = _recover(target, secrets.master_secret, secrets.master_salt)
        assert response.disk_uuid == rebooted.state.disk_uuid
        assert servicer.recovered.is_set()
        assert _pcr15(rebooted.node.tpm.tcti) == pcr15_for_cluster_id(secrets.cluster_id)
        assert rebooted.restarts == [rebooted.disk_key]
        with pytest.raises(grpc.RpcError) as info:
            _recover(target, secrets.master_secret, secrets.master_salt)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rebooted.restarts == [rebooted.disk_key]  # not restarted twice


def test_recover_does_not_mark_pcr15_a_second_time(rebooted: RebootedNode) -> None:
    """A node whose PCR 15 still carries the mark (the process restarted, not the VM)."""
    secrets = rebooted.secrets
    assert rebooted.node.lock.try_lock(secrets.cluster_id)
    marked = _pcr15(rebooted.node.tpm.tcti)
    with serve(rebooted.node, rebooted.server()) as target:
        _recover(target, secrets.master_secret, secrets.master_salt)
    assert _pcr15(rebooted.node.tpm.tcti) == marked


def test_a_failing_control_plane_restart_is_reported_and_allows_a_retry(
    rebooted: RebootedNode,
) -> None:
    calls: list[DiskKey] = []

    def flaky_restart(key: DiskKey) -> None:
        calls.append(key)
        if len(calls) == 1:
            raise BootstrapperError("etcd did not start")

    servicer = RecoveryServer(
        node_state=rebooted.state,
        state_disk=rebooted.node.disk,
        node_lock=rebooted.node.lock,
        on_recovered=flaky_restart,
    )
    secrets = rebooted.secrets
    with serve(rebooted.node, servicer) as target:
        with pytest.raises(grpc.RpcError) as info:
            _recover(target, secrets.master_secret, secrets.master_salt)
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert "etcd did not start" in info.value.details()
        assert not servicer.recovered.is_set()
        _recover(target, secrets.master_secret, secrets.master_salt)
    assert servicer.recovered.is_set()
    assert len(calls) == 2


def test_undecodable_request_is_invalid_argument(rebooted: RebootedNode) -> None:
    # Was INTERNAL ("Exception deserializing request!"), grpcio's own answer.
    with (
        serve(rebooted.node, rebooted.server()) as target,
        atls.connect(target, [_any_pcr15()], timeout=30) as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        channel.channel.unary_unary("/recoverproto.API/Recover")(b"\x0a\x10truncated", timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    rebooted.assert_untouched()
