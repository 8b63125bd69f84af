"""The two roles of remote attestation: issuing evidence and validating it.

An ``Issuer`` runs on the attested machine and produces a self-contained document that binds
caller-chosen ``user_data`` (e.g. the hash of a TLS public key) to a caller-chosen ``nonce``.
A ``Validator`` runs on the verifying side with trusted inputs only (expected measurements,
pinned roots, policy) and either returns what it verified or raises ``ValidationError``
listing every failed check.

Binding: every variant binds ``extra_data(user_data, nonce)`` into its hardware evidence::

    SHA-256( b"constellation/evidence/v1\\0"
             || u32be(len(user_data)) || user_data
             || u32be(len(nonce))     || nonce )

The domain label keeps these digests apart from any other SHA-256 a TPM or an SNP firmware may
be asked to sign, and the length prefixes make the encoding injective: no two different
``(user_data, nonce)`` pairs hash the same input (the unframed ``SHA-256(user_data || nonce)``
let a 40-byte ``user_data`` with an 8-byte nonce collide with a 32-byte one and a 16-byte
nonce). vTPM variants put ``SHA-256(instance_info || extra_data)`` into the quote's qualifying
data.

Purpose labels: ``user_data`` itself always starts with a label naming what the evidence is
for, so evidence obtained for one purpose can never be presented for another:

- aTLS: ``ATLS_USER_DATA_LABEL || SHA-256(SPKI DER of the TLS key)``
  (``constellation.attestation.atls.protocol.atls_user_data``);
- VerificationService: exactly ``VERIFY_USER_DATA_LABEL`` (what ``constellation verify``
  expects; the verifier's nonce makes it fresh).

Both labels end in NUL, and neither is a prefix of the other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from constellation.attestation.errors import Failure
from constellation.attestation.identity import NodeIdentity

#: Domain separation of :func:`extra_data` (versioned: a new framing gets a new label).
EVIDENCE_BINDING_LABEL = b"constellation/evidence/v1\0"
#: ``user_data`` prefix of aTLS evidence (followed by the SHA-256 of the TLS key's SPKI).
ATLS_USER_DATA_LABEL = b"constellation/atls/v1\0"
#: The whole ``user_data`` of VerificationService evidence (``constellation verify``).
VERIFY_USER_DATA_LABEL = b"constellation/verify/v1\0"

_U32_MAX = 0xFFFFFFFF


def extra_data(user_data: bytes, nonce: bytes) -> bytes:
    """The digest every variant binds into its hardware evidence (framing: module docstring).

    Length-framed and domain-separated so the pair ``(user_data, nonce)`` is recoverable from
    the hashed bytes: evidence cannot be re-read as a different split of the same bytes.
    """
    if len(user_data) > _U32_MAX or len(nonce) > _U32_MAX:
        raise ValueError("user_data and nonce must each be shorter than 4 GiB")
    return hashlib.sha256(
        b"".join(
            (
                EVIDENCE_BINDING_LABEL,
                len(user_data).to_bytes(4, "big"),
                user_data,
                len(nonce).to_bytes(4, "big"),
                nonce,
            )
        )
    ).digest()


@dataclass(frozen=True)
class VerifiedEvidence:
    """What a validator established about the attested party.

    ``pcrs`` are the quoted SHA-256 PCR values (index -> 32 bytes); ``details`` holds
    variant-specific, public facts (e.g. SNP report fields) for logs and handlers.
    ``identity`` is the platform identity of the attesting machine when the variant verified
    one (an AK certificate chaining to a configured platform root); ``None`` otherwise.
    """

    variant: str
    user_data: bytes
    pcrs: Mapping[int, bytes] = field(default_factory=dict)
    warnings: tuple[Failure, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)
    identity: NodeIdentity | None = None


@runtime_checkable
class Issuer(Protocol):
    """Produces evidence on the attested machine."""

    @property
    def variant(self) -> str: ...

    def issue(self, user_data: bytes, nonce: bytes) -> bytes:
        """Return an attestation document binding ``user_data`` to ``nonce``."""
        ...


@runtime_checkable
class Validator(Protocol):
    """Checks evidence against trusted inputs. Pure: no I/O."""

    @property
    def variant(self) -> str: ...

    def verify(self, document: bytes, nonce: bytes) -> VerifiedEvidence:
        """Return what was verified, or raise ``ValidationError`` with every failed check."""
        ...

    def validate(self, document: bytes, nonce: bytes) -> bytes:
        """Shorthand for ``verify(document, nonce).user_data``."""
        ...
