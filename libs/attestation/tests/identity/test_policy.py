"""RequireRole: the attested machine's platform role, on top of the inner verdict."""

from __future__ import annotations

import pytest

from constellation.attestation.errors import ValidationError
from constellation.attestation.evidence import VerifiedEvidence
from constellation.attestation.identity import NodeIdentity, Role
from constellation.attestation.identity.policy import RequireRole


class Fixed:
    variant = "qemu-vtpm"

    def __init__(self, evidence: VerifiedEvidence) -> None:
        self.evidence = evidence

    def verify(self, document: bytes, nonce: bytes) -> VerifiedEvidence:
        return self.evidence

    def validate(self, document: bytes, nonce: bytes) -> bytes:
        return self.evidence.user_data


def evidence(role: Role | None) -> VerifiedEvidence:
    identity = None if role is None else NodeIdentity("node-0", role, "aa" * 32, "bb" * 32)
    return VerifiedEvidence("qemu-vtpm", b"u", identity=identity)


def test_the_required_role_passes_and_another_is_refused() -> None:
    ok = evidence(Role.CONTROL_PLANE)
    assert RequireRole(Fixed(ok), Role.CONTROL_PLANE, why="init").verify(b"", b"") is ok
    with pytest.raises(ValidationError) as refused:
        RequireRole(Fixed(evidence(Role.WORKER)), Role.CONTROL_PLANE, why="init").verify(b"", b"")
    (failure,) = refused.value.failures
    assert (failure.check, failure.expected, failure.actual) == (
        "identity.role",
        "control-plane",
        "worker (node-0)",
    )


def test_evidence_without_a_platform_identity_is_left_to_the_inner_validator() -> None:
    bare = evidence(None)
    assert RequireRole(Fixed(bare), Role.WORKER, why="x").validate(b"", b"") == b"u"
