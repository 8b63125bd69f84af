"""Errors of the VerificationService; their gRPC codes are set in ``server.STATUS_CODES``."""

from __future__ import annotations

from constellation.attestation.errors import ConstellationError


class VerificationServiceError(ConstellationError):
    """Root of the VerificationService's errors."""


class ConfigError(VerificationServiceError):
    """The service cannot start with the given flags (exit code 2)."""


class InvalidNonceError(VerificationServiceError):
    """The nonce is missing, repeated, malformed, too short or too long (400 / INVALID_ARGUMENT)."""


class RateLimitError(VerificationServiceError):
    """Evidence is requested faster than the service's rate bound (429 / RESOURCE_EXHAUSTED).

    ``retry_after`` is the wait in seconds after which one more request would be served.
    """

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class IssueError(VerificationServiceError):
    """Evidence could not be issued (the TPM failed); the caller gets UNAVAILABLE / 503."""
