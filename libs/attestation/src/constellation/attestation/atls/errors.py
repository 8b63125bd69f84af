"""Errors of aTLS.

``ATLSError`` is the root. A peer whose evidence was parsed but failed a check is reported
with the library's ``ValidationError`` (every failed check, including the aTLS binding checks
``atls.variant`` and ``atls.user_data``), so callers handle one rejection type for all variants.
"""

from __future__ import annotations

from constellation.attestation.errors import AttestationError


class ATLSError(AttestationError):
    """Root of aTLS errors."""


class ATLSConnectionError(ATLSError):
    """The peer could not be reached, or the TLS handshake with it failed or timed out.

    This includes a server that presents a certificate other than the pinned one (for example a
    copied certificate without its private key): TLS itself refuses such a peer.
    """


class ATLSHandshakeError(ATLSError):
    """The attestation handshake itself failed: no, empty or malformed answer from the peer."""


class NonceRefusedError(ATLSError):
    """A server nonce was not issued by this server to this client certificate, has expired,
    or was already spent on verified evidence. The client must repeat the handshake.

    Servers answer UNAUTHENTICATED.
    """


class NonceCapacityError(ATLSError):
    """The server holds as many spent, unexpired nonces as it may; it refuses more until some
    expire (fail closed). Servers answer RESOURCE_EXHAUSTED; the client retries later.
    """


class RateLimitedError(ATLSError):
    """Unauthenticated attestation work arrives faster than the configured rate.

    ``retry_after`` is the number of seconds after which one more request would be admitted.
    Servers answer RESOURCE_EXHAUSTED (HTTP 429).
    """

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        milliseconds = max(1, round(retry_after * 1000))
        super().__init__(f"attestation rate exceeded; retry in {milliseconds} ms")
