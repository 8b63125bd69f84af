"""Fresh evidence of this node for ``constellation verify``.

The verifier chooses the nonce; the evidence binds it, length-framed and domain-separated
(``constellation.attestation.evidence.extra_data``), together with the fixed user data
``VERIFY_USER_DATA_LABEL`` (``b"constellation/verify/v1\\0"``). The label is what keeps this
endpoint from being a quote oracle for other protocols: aTLS accepts only evidence whose user
data starts with its own, different label, so a document obtained here cannot be replayed as
aTLS evidence, and a short nonce cannot be chosen to make the framed bytes look like another
protocol's input. The verifier's fresh nonce keeps it from being replayed to another verifier.

Nonce rules, shared by gRPC and HTTP: present exactly once, ``MIN_NONCE_SIZE`` (16) to
``MAX_NONCE_SIZE`` (64) bytes - fewer random bytes than 16 do not make evidence fresh; over
HTTP base64url (padding optional). A valid request then takes a token from the service's rate
bound (``atls.ratelimit.TokenBucket``, shared by gRPC and HTTP): each answer costs a TPM quote.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

from constellation.attestation.atls.errors import RateLimitedError
from constellation.attestation.atls.ratelimit import TokenBucket
from constellation.attestation.errors import ConstellationError
from constellation.attestation.evidence import VERIFY_USER_DATA_LABEL, Issuer
from constellation.attestation.service.metrics import ServiceMetrics
from constellation.verificationservice.errors import InvalidNonceError, IssueError, RateLimitError

USER_DATA = VERIFY_USER_DATA_LABEL
#: The CLI sends 32 bytes. Fewer than 16 cannot make evidence fresh; more than 64 serves no
#: purpose. Both are refused.
MIN_NONCE_SIZE = 16
MAX_NONCE_SIZE = 64
#: A query string longer than this cannot hold a valid nonce; refuse it unparsed.
MAX_QUERY_LENGTH = 1024
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def check_nonce(nonce: bytes) -> bytes:
    """Return ``nonce`` if its length is within bounds; raise ``InvalidNonceError`` otherwise."""
    if not MIN_NONCE_SIZE <= len(nonce) <= MAX_NONCE_SIZE:
        raise InvalidNonceError(
            f"nonce must be {MIN_NONCE_SIZE} to {MAX_NONCE_SIZE} random bytes, got {len(nonce)}; "
            "send a fresh 32-byte nonce"
        )
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
    """Issues this node's evidence for a verifier's nonce, one TPM session at a time, at a
    bounded rate (default 200/s, burst 400; ``rate_limit`` to change it or its clock).
    """

    def __init__(
        self, issuer: Issuer, metrics: ServiceMetrics, *, rate_limit: TokenBucket | None = None
    ) -> None:
        self._issuer = issuer
        self._metrics = metrics
        self._rate_limit = rate_limit if rate_limit is not None else TokenBucket()
        self._lock = threading.Lock()

    @property
    def variant(self) -> str:
        return self._issuer.variant

    def attest(self, nonce: bytes) -> bytes:
        """Evidence over (``USER_DATA``, ``nonce``); raises ``InvalidNonceError``,
        ``RateLimitError`` or ``IssueError``."""
        check_nonce(nonce)
        try:
            self._rate_limit.acquire()
        except RateLimitedError as exc:
            raise RateLimitError(str(exc), exc.retry_after) from None
        try:
            with self._lock, self._metrics.time_attestation("issue"):
                return self._issuer.issue(USER_DATA, nonce)
        except ConstellationError as exc:
            raise IssueError(f"evidence could not be issued: {exc}") from exc
