"""Wire facts of the aTLS protocol and its one pure check.

The steps are described in the package docstring (``constellation.attestation.atls``); this
module declares the names and sizes they use once, and implements the check both sides run on
the other's evidence: right variant, valid evidence for *our* nonce, and user data equal to the
aTLS label followed by the SPKI hash of the key the TLS handshake authenticated.
"""

from __future__ import annotations

from collections.abc import Sequence

from constellation.attestation.errors import Failure, MalformedEvidenceError, ValidationError
from constellation.attestation.evidence import ATLS_USER_DATA_LABEL, Validator, VerifiedEvidence

#: Full gRPC method name of the attestation handshake (proto ``atls.Handshake/Attest``).
HANDSHAKE_METHOD = "/atls.Handshake/Attest"

#: The client's nonce in ``AttestRequest.client_nonce``: exactly 32 random bytes.
CLIENT_NONCE_SIZE = 32
#: The server's nonce in ``AttestResponse.server_nonce`` (mutual servers): exactly
#: ``random(16) || expiry u64be || tag(16)``, see ``nonces.NonceStore``.
SERVER_NONCE_SIZE = 40

#: Call metadata a mutual-aTLS client attaches to every call (binary keys end in ``-bin``).
METADATA_VARIANT = "atls-variant"
METADATA_EVIDENCE = "atls-evidence-bin"
METADATA_NONCE = "atls-nonce-bin"

#: Upper bound for an evidence document carried in metadata or a handshake answer. vTPM
#: documents with an event log are tens of KiB; anything far beyond is refused unread.
MAX_EVIDENCE_SIZE = 512 * 1024

#: gRPC options both ends set so evidence fits into call metadata (the default is 8 KiB).
GRPC_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_metadata_size", MAX_EVIDENCE_SIZE + 64 * 1024),
    ("grpc.absolute_max_metadata_size", MAX_EVIDENCE_SIZE + 64 * 1024),
)


def atls_user_data(spki_digest: bytes) -> bytes:
    """The user data aTLS evidence carries: ``ATLS_USER_DATA_LABEL || SHA-256(SPKI DER)``.

    The label makes aTLS evidence useless as VerificationService evidence and vice versa
    (``constellation.attestation.evidence`` lists the labels).
    """
    if len(spki_digest) != 32:
        raise ValueError(f"an SPKI digest is 32 bytes, got {len(spki_digest)}")
    return ATLS_USER_DATA_LABEL + spki_digest


def verify_peer_evidence(
    validators: Sequence[Validator],
    *,
    variant: str,
    document: bytes,
    nonce: bytes,
    expected_user_data: bytes,
    subject: str,
) -> VerifiedEvidence:
    """Validate a peer's evidence and its binding to the peer's TLS key.

    Returns the verified evidence or raises ``ValidationError`` (every failed check, the
    validator's own and ``atls.user_data``) or ``MalformedEvidenceError``.
    """
    if len(document) > MAX_EVIDENCE_SIZE:
        raise MalformedEvidenceError(
            f"{subject}: evidence of {len(document)} bytes exceeds the aTLS limit of "
            f"{MAX_EVIDENCE_SIZE} bytes"
        )
    matching = [v for v in validators if v.variant == variant]
    if not matching:
        accepted = ", ".join(sorted(v.variant for v in validators)) or "none"
        raise ValidationError(
            [Failure(check="atls.variant", expected=accepted, actual=variant or "<empty>")],
            subject=subject,
        )
    verified = matching[0].verify(document, nonce)
    if verified.user_data != expected_user_data:
        raise ValidationError(
            [
                Failure(
                    check="atls.user_data",
                    expected=expected_user_data.hex(),
                    actual=verified.user_data.hex(),
                    detail="evidence is bound to a different TLS key",
                )
            ],
            verified.warnings,
            subject=subject,
        )
    return verified
