"""Fresh evidence of this node for ``constellation verify``.

The verifier chooses the nonce; the evidence binds it together with the fixed user data
``VerifyService`` (DESIGN.md §3), so a document obtained here cannot be replayed as aTLS
evidence (whose user data is a key hash) nor to another verifier (other nonce).

Nonce rules, shared by gRPC and HTTP: present exactly once, not empty, at most
``MAX_NONCE_SIZE`` bytes; over HTTP base64url (padding optional).
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

from constellation.attestation.errors import ConstellationError
from constellation.attestation.evidence import Issuer
from constellation.attestation.service.metrics import ServiceMetrics
from constellation.verificationservice.errors import InvalidNonceError, IssueError

USER_DATA = b"VerifyService"
#: The CLI sends 32 bytes; more than 64 serves no purpose and is refused.
MAX_NONCE_SIZE = 64
#: A query string longer than this cannot hold a valid nonce; refuse it unparsed.
MAX_QUERY_LENGTH = 1024
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def check_nonce(nonce: bytes) -> bytes:
    if not nonce:
        raise InvalidNonceError("nonce must not be empty")
    if len(nonce) > MAX_NONCE_SIZE:
        raise InvalidNonceError(f"nonce must be at most {MAX_NONCE_SIZE} bytes, got {len(nonce)}")
    return nonce


def nonce_from_query(query: str) -> bytes:
    """The nonce of an HTTP query string ``nonce=<base64url>``; raises ``InvalidNonceError``."""
    if len(query) > MAX_QUERY_LENGTH:
        raise InvalidNonceError(f"query string longer than {MAX_QUERY_LENGTH} characters")
    try:
        values = parse_qs(query, keep_blank_values=True, strict_parsing=False, max_num_fields=8)
    except ValueError as exc:
        raise InvalidNonceError(f"malformed query string: {exc}") from None
    found = values.get("nonce", [])
    if not found:
        raise InvalidNonceError("query parameter 'nonce' is missing")
    if len(found) > 1:
        raise InvalidNonceError("query parameter 'nonce' must be given once")
    text = found[0]
    if not text:
        raise InvalidNonceError("nonce must not be empty")
    if not _BASE64URL.fullmatch(text):
        raise InvalidNonceError("nonce must be base64url (A-Z a-z 0-9 - _)")
    try:
        nonce = base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        raise InvalidNonceError("nonce is not valid base64url") from None
    return check_nonce(nonce)


def event_log_reader(path: Path) -> Callable[[], bytes]:
    """Re-reads the node's TCG event log for every document (mini mode appends to it)."""

    def read() -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise IssueError(f"cannot read the event log {path}: {exc.strerror}") from None

    return read


class EvidenceSource:
    """Issues this node's evidence for a verifier's nonce, one TPM session at a time."""

    def __init__(self, issuer: Issuer, metrics: ServiceMetrics) -> None:
        self._issuer = issuer
        self._metrics = metrics
        self._lock = threading.Lock()

    @property
    def variant(self) -> str:
        return self._issuer.variant

    def attest(self, nonce: bytes) -> bytes:
        check_nonce(nonce)
        try:
            with self._lock, self._metrics.time_attestation("issue"):
                return self._issuer.issue(USER_DATA, nonce)
        except ConstellationError as exc:
            raise IssueError(f"evidence could not be issued: {exc}") from exc
