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
