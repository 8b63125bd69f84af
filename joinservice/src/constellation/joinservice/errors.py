"""Errors of the JoinService.

Every error the JoinService raises on purpose derives from ``JoinServiceError`` (itself a
``ConstellationError``). The gRPC layer maps the classes below to status codes in exactly one
place (``server.StatusInterceptor``); handlers never set status codes themselves. Messages name
what was expected, what was found and what to do; they never carry a key, a token or a CA key.
"""

from __future__ import annotations

from collections.abc import Sequence

from constellation.attestation.errors import ConstellationError, Failure, render_failures


class JoinServiceError(ConstellationError):
    """Root of the JoinService's errors."""


class ConfigError(JoinServiceError):
    """The service's own settings (flags, mounted files) are unusable; fatal at start-up."""


class JoinConfigError(JoinServiceError):
    """The ``join-config`` (variant, measurements, salt) is missing or malformed.

    At start-up this is fatal; on a later change the watcher keeps the previous validator and
    logs this error instead.
    """


class InvalidRequestError(JoinServiceError):
    """The request itself is malformed (disk UUID format, CSR size or content). Maps to
    INVALID_ARGUMENT."""


class RefusedError(JoinServiceError):
    """The attested peer is not entitled to what it asked for. Maps to PERMISSION_DENIED.

    ``failures`` lists every reason, in the same shape as an attestation rejection report, so
    the decision log reads the same whether the TPM quote or a JoinService policy said no.
    """

    def __init__(self, failures: Sequence[Failure], *, subject: str = "join request") -> None:
        self.failures: tuple[Failure, ...] = tuple(failures)
        self.subject = subject
        super().__init__(f"{subject} refused: {render_failures(self.failures)}")


class DiskBindingError(RefusedError):
    """The disk UUID is already bound to a different attested node identity."""


class UpstreamError(JoinServiceError):
    """A collaborator (KeyService, Kubernetes API) failed or is unreachable. Maps to
    UNAVAILABLE; the caller may retry."""


class NotReadyError(JoinServiceError):
    """The service has no valid ``join-config`` yet. Maps to UNAVAILABLE."""
