"""The two roles of remote attestation: issuing evidence and validating it.

An ``Issuer`` runs on the attested machine and produces a self-contained document that binds
caller-chosen ``user_data`` (e.g. the hash of a TLS public key) to a caller-chosen ``nonce``.
A ``Validator`` runs on the verifying side with trusted inputs only (expected measurements,
pinned roots, policy) and either returns what it verified or raises ``ValidationError``
listing every failed check.

Binding (DESIGN.md §3): ``extra_data = SHA-256(user_data || nonce)``; vTPM variants put
``SHA-256(instance_info || extra_data)`` into the quote's qualifying data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from constellation.attestation.errors import Failure
from constellation.attestation.identity import NodeIdentity


def extra_data(user_data: bytes, nonce: bytes) -> bytes:
    """``SHA-256(user_data || nonce)``: what every variant binds into its hardware evidence."""
    return hashlib.sha256(user_data + nonce).digest()


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
