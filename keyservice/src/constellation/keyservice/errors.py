"""Errors of the KeyService; the gRPC status of each is decided in ``server.STATUS_CODES``."""

from __future__ import annotations

from constellation.attestation.errors import ConstellationError


class KeyServiceError(ConstellationError):
    """Root of the KeyService's errors."""


class ConfigError(KeyServiceError):
    """The service cannot start with the given flags or secret files (exit code 2)."""


class InvalidRequestError(KeyServiceError):
    """A request asks for something that is not a valid data key (INVALID_ARGUMENT)."""
