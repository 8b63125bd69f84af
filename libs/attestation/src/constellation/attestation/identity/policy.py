"""Policies over a verified platform identity, composed around any validator.

A validator establishes *what* booted and, through the AK certificate, *which* machine quoted.
Some callers also need the machine to hold a particular role: the CLI sends the master secret
(Init, recover) only to a control-plane node, and a joining node trusts a JoinService only on a
control-plane node. ``RequireRole`` adds that check to a validator's verdict; its refusal is a
``ValidationError`` like any other (failure ``identity.role``), so the aTLS client closes the
channel before a byte of application data is sent.

Evidence of a variant that verifies no platform identity (``identity is None``, the SEV-SNP
variants today) carries no role at all; it is judged by the inner validator alone.
"""

from __future__ import annotations

from constellation.attestation.errors import Failure, ValidationError
from constellation.attestation.evidence import Validator, VerifiedEvidence
from constellation.attestation.identity import Role


def role_failures(evidence: VerifiedEvidence, role: Role, *, why: str) -> list[Failure]:
    """``[identity.role]`` when the evidence's platform identity holds another role."""
    identity = evidence.identity
    if identity is None or identity.role is role:
        return []
    return [
        Failure("identity.role", role.value, f"{identity.role.value} ({identity.name})", detail=why)
    ]


class RequireRole:
    """A ``Validator`` that also demands the attested machine's platform role."""

    def __init__(self, inner: Validator, role: Role, *, why: str) -> None:
        self._inner = inner
        self._role = role
        self._why = why

    @property
    def variant(self) -> str:
        return self._inner.variant

    def verify(self, document: bytes, nonce: bytes) -> VerifiedEvidence:
        evidence = self._inner.verify(document, nonce)
        failures = role_failures(evidence, self._role, why=self._why)
        if failures:
            raise ValidationError(failures, evidence.warnings, subject=f"{self.variant} evidence")
        return evidence

    def validate(self, document: bytes, nonce: bytes) -> bytes:
        return self.verify(document, nonce).user_data
