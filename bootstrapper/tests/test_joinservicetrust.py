"""The node's demands on the JoinService: a node-lock mark (the right one on a rejoin) and a
control-plane identity, on top of whatever the image validator checked."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from constellation.attestation.errors import Failure, ValidationError
from constellation.attestation.evidence import VerifiedEvidence
from constellation.attestation.identity import NodeIdentity, Role
from constellation.attestation.measurements import pcr15_for_cluster_id
from constellation.bootstrapper.joinservicetrust import JoinServiceValidator

CLUSTER = b"\x11" * 32
OTHER_CLUSTER = b"\x22" * 32


@dataclass
class Inner:
    """The image validator's verdict, fixed: this test is about what the wrapper adds."""

    evidence: VerifiedEvidence | None = None
    refusal: ValidationError | None = None
    variant: str = "qemu-vtpm"

    def verify(self, document: bytes, nonce: bytes) -> VerifiedEvidence:
        if self.refusal is not None:
            raise self.refusal
        assert self.evidence is not None
        return self.evidence

    def validate(self, document: bytes, nonce: bytes) -> bytes:
        return self.verify(document, nonce).user_data


def evidence(pcr15: bytes | None, role: Role | None = Role.CONTROL_PLANE) -> VerifiedEvidence:
    identity = None if role is None else NodeIdentity("mini-cp-0", role, "ab" * 32, "cd" * 32)
    pcrs = {4: b"\x04" * 32} | ({} if pcr15 is None else {15: pcr15})
    return VerifiedEvidence("qemu-vtpm", b"user", pcrs, identity=identity)


def checks(err: pytest.ExceptionInfo[ValidationError]) -> set[str]:
    return {f.check for f in err.value.failures}


def test_a_marked_control_plane_is_trusted_for_a_join() -> None:
    marked = evidence(pcr15_for_cluster_id(OTHER_CLUSTER))
    assert JoinServiceValidator(Inner(marked)).verify(b"doc", b"n") is marked


def test_a_joinservice_on_an_unmarked_node_is_refused() -> None:
    for pcr15 in (bytes(32), None):
        with pytest.raises(ValidationError) as refused:
            JoinServiceValidator(Inner(evidence(pcr15))).verify(b"doc", b"n")
        assert checks(refused) == {"pcr[15]"}


def test_a_rejoin_demands_the_mark_of_the_nodes_own_cluster() -> None:
    own = evidence(pcr15_for_cluster_id(CLUSTER))
    assert JoinServiceValidator(Inner(own), cluster_id=CLUSTER).verify(b"d", b"n") is own
    foreign = evidence(pcr15_for_cluster_id(OTHER_CLUSTER))
    with pytest.raises(ValidationError) as refused:
        JoinServiceValidator(Inner(foreign), cluster_id=CLUSTER).verify(b"d", b"n")
    assert checks(refused) == {"pcr[15]"}
    assert pcr15_for_cluster_id(CLUSTER).hex() in str(refused.value)


def test_a_worker_identity_is_refused_and_every_failure_is_reported() -> None:
    with pytest.raises(ValidationError) as refused:
        JoinServiceValidator(Inner(evidence(bytes(32), Role.WORKER))).verify(b"d", b"n")
    assert checks(refused) == {"pcr[15]", "identity.role"}


def test_the_image_validators_refusal_passes_through() -> None:
    refusal = ValidationError([Failure("ak.certificate", "a certificate", "none")])
    with pytest.raises(ValidationError) as refused:
        JoinServiceValidator(Inner(refusal=refusal)).verify(b"d", b"n")
    assert refused.value is refusal


def test_variants_without_a_platform_identity_are_judged_by_the_mark_alone() -> None:
    marked = evidence(pcr15_for_cluster_id(CLUSTER), role=None)
    assert JoinServiceValidator(Inner(marked)).verify(b"d", b"n") is marked
