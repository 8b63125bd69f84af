"""Errors of the VerificationService; their gRPC codes are set in ``server.STATUS_CODES``."""

from __future__ import annotations

from constellation.attestation.errors import ConstellationError


class VerificationServiceError(ConstellationError):
    """Root of the VerificationService's errors."""


class ConfigError(VerificationServiceError):
    """The service cannot start with the given flags (exit code 2)."""


class InvalidNonceError(VerificationServiceError):
    """The nonce is missing, empty, repeated, malformed or too long (400 / INVALID_ARGUMENT)."""


class IssueError(VerificationServiceError):
    """Evidence could not be issued (the TPM failed); the caller gets UNAVAILABLE / 503."""
