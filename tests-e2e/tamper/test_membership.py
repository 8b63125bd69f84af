"""Identity-bound membership: a platform-certified machine the attacker controls.

Its attestation is genuine (the genuine image, its own vTPM, an AK certificate the platform
issued for *its* instance name), so everything it claims beyond that must be checked against
that identity: the node name in its kubelet CSR, the control-plane role, the disks it asks keys
for, and how many tickets one attestation buys. Issue 10 found all four open.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import pytest

from constellation.attestation import atls
from constellation.attestation.identity import Role
from constellation.attestation.nodelock import NodeLock
from constellation.bootstrapper.statedisk import StateDisk
from constellation.proto import join_pb2_grpc

from .conftest import RPC_TIMEOUT_S, AcceptAnyServer, Attacker, Refusal

pytestmark = [pytest.mark.tamper, pytest.mark.e2e, pytest.mark.slow, pytest.mark.swtpm]

DENIED = grpc.StatusCode.PERMISSION_DENIED


def _disk_of(attacker: Attacker, node: str) -> str:
    """A member's LUKS UUID: written in the clear in its state disk's header."""
    return StateDisk(attacker.workspace / "mini" / "nodes" / node / "disk.img").uuid()


def _marked(attacker: Attacker, role: Role = Role.WORKER, *, cluster_id: bytes | None = None):  # type: ignore[no-untyped-def]
    """An insider whose vTPM carries the node-lock mark of a cluster (default: this one)."""
    insider = attacker.insider(role)
    assert NodeLock(insider.tpm.tcti).try_lock(cluster_id or attacker.cluster_id())
    return insider


def test_control_a_genuine_certified_node_joins_once(attacker: Attacker) -> None:
    """The positive control: the checks below refuse claims, not genuine machines."""
    insider = attacker.insider()
    attacker.join(insider.issuer(), attacker.request(insider.name)).is_accepted()


def test_a_csr_naming_the_control_plane_is_refused(attacker: Attacker) -> None:
    insider = attacker.insider()
    attacker.join(insider.issuer(), attacker.request("mini-cp-0")).is_(DENIED, "csr.node_name")


def test_a_csr_naming_another_worker_is_refused(attacker: Attacker) -> None:
    insider = attacker.insider()
    refusal = attacker.join(insider.issuer(), attacker.request("mini-worker-0"))
    refusal.is_(DENIED, "csr.node_name", f"system:node:{insider.name}")


def test_a_worker_identity_gets_no_control_plane_files(attacker: Attacker) -> None:
    insider = attacker.insider(Role.WORKER)
    request = attacker.request(insider.name, control_plane=True)
    attacker.join(insider.issuer(), request).is_(DENIED, "identity.role")


def test_a_control_plane_identity_cannot_join_as_a_worker(attacker: Attacker) -> None:
    insider = attacker.insider(Role.CONTROL_PLANE)
    request = attacker.request(insider.name, control_plane=False)
    attacker.join(insider.issuer(), request).is_(DENIED, "identity.role")


def test_a_name_already_bound_to_another_machine_is_refused(attacker: Attacker) -> None:
    """A second machine certified under a member's name (a re-used instance name)."""
    impostor = attacker.insider(name="mini-worker-0")
    attacker.join(impostor.issuer(), attacker.request("mini-worker-0")).is_(
        DENIED, "node.name_taken"
    )


def test_a_join_with_a_members_disk_uuid_is_refused(attacker: Attacker) -> None:
    insider = attacker.insider()
    request = attacker.request(insider.name, disk=_disk_of(attacker, "mini-worker-0"))
    attacker.join(insider.issuer(), request).is_(DENIED, "disk.bound_elsewhere")


def test_a_rejoin_for_a_disk_never_bound_creates_nothing(attacker: Attacker) -> None:
    insider = _marked(attacker)
    attacker.rejoin(insider.issuer(), str(uuid.uuid4())).is_(DENIED, "disk.unknown")


def test_a_rejoin_for_a_members_disk_is_refused(attacker: Attacker) -> None:
    """The cluster ID is public, so an attacker can mark its own vTPM: the binding is what
    keeps worker-0's disk key from it."""
    insider = _marked(attacker)
    disk = _disk_of(attacker, "mini-worker-0")
    attacker.rejoin(insider.issuer(), disk).is_(DENIED, "disk.bound_elsewhere")


def test_a_rejoin_from_an_unmarked_node_is_refused(attacker: Attacker) -> None:
    insider = attacker.insider()
    attacker.rejoin(insider.issuer(), str(uuid.uuid4())).is_(DENIED, "node_state")


def test_a_rejoin_marked_for_another_cluster_is_refused(attacker: Attacker) -> None:
    insider = _marked(attacker, cluster_id=b"\x07" * 32)
    refusal = attacker.rejoin(insider.issuer(), str(uuid.uuid4()))
    refusal.is_(DENIED, "pcr[15]")


def test_a_join_from_a_node_already_marked_is_refused(attacker: Attacker) -> None:
    insider = _marked(attacker)
    attacker.join(insider.issuer(), attacker.request(insider.name)).is_(DENIED, "node_state")


def test_one_attestation_buys_one_ticket(attacker: Attacker) -> None:
    """25 tickets from one attested key in 3 s before; now the second call is refused."""
    insider = attacker.insider()
    with atls.connect(
        attacker.joinservice, [AcceptAnyServer()], issuer=insider.issuer(), timeout=RPC_TIMEOUT_S
    ) as channel:
        stub = join_pb2_grpc.APIStub(channel.channel)
        first = Refusal.of(
            lambda: stub.IssueJoinTicket(attacker.request(insider.name), timeout=RPC_TIMEOUT_S)
        )
        second = Refusal.of(
            lambda: stub.IssueJoinTicket(attacker.request(insider.name), timeout=RPC_TIMEOUT_S)
        )
    first.is_accepted()
    second.is_(DENIED, "attestation.spent")


def test_fresh_attestations_of_one_identity_are_rate_limited(attacker: Attacker) -> None:
    """Each attempt attests afresh (a new TLS key, a new nonce); the identity's bucket runs dry."""
    insider = attacker.insider()
    refusals = [attacker.join(insider.issuer(), attacker.request("mini-cp-0")) for _ in range(6)]
    assert {r.code for r in refusals[:3]} == {DENIED}
    refusals[-1].is_(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate.identity", "retry in")


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("disk_uuid", "../../etc/passwd", "disk_uuid must be a UUID"),
        ("certificate_request", b"", "certificate_request is empty"),
        ("certificate_request", b"x" * (64 * 1024), "limit"),
        ("certificate_request", b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", "CSR"),
    ],
)
def test_malformed_requests_are_invalid_arguments(
    attacker: Attacker, field: str, value: object, fragment: str
) -> None:
    insider = attacker.insider()
    request = attacker.request(insider.name)
    setattr(request, field, value)
    attacker.join(insider.issuer(), request).is_(grpc.StatusCode.INVALID_ARGUMENT, fragment)


def test_refusals_leave_no_binding_behind(attacker: Attacker, tmp_path: Path) -> None:
    """A refused insider's disk is still free: its later genuine join with it succeeds."""
    insider = attacker.insider()
    disk = str(uuid.uuid4())
    attacker.join(insider.issuer(), attacker.request("mini-cp-0", disk=disk)).is_(
        DENIED, "csr.node_name"
    )
    attacker.join(insider.issuer(), attacker.request(insider.name, disk=disk)).is_accepted()
