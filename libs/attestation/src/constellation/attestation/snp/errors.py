"""Errors of the SEV-SNP verifier.

Three kinds of trouble are kept apart because callers react differently to each:

* ``MalformedReportError`` / ``MalformedCertificateError``: the input is not a report or not a
  certificate at all (truncated, garbage). Nothing was checked; the operator command maps this
  to "unusable input".
* ``VerificationError``: the input parsed but failed checks. It is a ``ValidationError`` and
  carries *every* failed check in ``.failures`` (and warn-only findings in ``.warnings``).
* ``KdsError`` and its subclasses: fetching AMD certificates failed (offline, rate-limited,
  not found). Only the fetcher raises these; the pure verifier never does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from constellation.attestation.errors import (
    AttestationError,
    Failure,
    MalformedEvidenceError,
    ValidationError,
)


class MalformedReportError(MalformedEvidenceError):
    """The bytes are not an SEV-SNP attestation report (too short, unknown shape)."""


class MalformedCertificateError(MalformedEvidenceError):
    """A certificate (V[CL]EK, ASK, ARK) could not be decoded as PEM or DER X.509."""


class VerificationError(ValidationError):
    """An SEV-SNP report was parsed but at least one enforced check failed."""

    def __init__(self, failures: Sequence[Failure], warnings: Sequence[Failure] = ()) -> None:
        super().__init__(failures, warnings, subject="SEV-SNP report")


class KdsError(AttestationError):
    """AMD Key Distribution Service material could not be obtained."""


class KdsOfflineError(KdsError):
    """Offline mode is on and the requested certificate is not in the cache."""


class KdsNotFoundError(KdsError):
    """The KDS answered 404: no such product, chip or TCB."""


class KdsRateLimitedError(KdsError):
    """The KDS kept answering 429 (or 5xx) beyond the configured retry budget."""


class TrustStoreError(AttestationError):
    """A trust directory holds a certificate that does not match the pinned AMD roots."""
