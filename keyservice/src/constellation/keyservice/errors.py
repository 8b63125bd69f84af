"""Errors of the KeyService; the gRPC status of each is decided in ``server.STATUS_CODES``.

Messages name what was expected, what was found and what to do; never a key (the master
secret, a data key, the TLS private key).
"""

from __future__ import annotations

from collections.abc import Sequence

from constellation.attestation.errors import ConstellationError, Failure, render_failures


class KeyServiceError(ConstellationError):
    """Root of the KeyService's errors."""


class ConfigError(KeyServiceError):
    """The service cannot start with the given flags or secret files (exit code 2)."""


class TLSConfigError(ConfigError):
    """The TLS files (certificate, key, client CA) cannot authenticate the JoinService.

    ``failures`` lists every failed check, so one start-up attempt shows all of them.
    """

    def __init__(self, failures: Sequence[Failure]) -> None:
        self.failures: tuple[Failure, ...] = tuple(failures)
        super().__init__(
            f"the KeyService's TLS files are unusable: {render_failures(self.failures)}; "
            "mount the constellation-keyservice-tls Secret that `constellation apply` wrote "
            "(ca.crt, tls.crt, tls.key)"
        )


class InvalidRequestError(KeyServiceError):
    """A request asks for something that is not a valid data key (INVALID_ARGUMENT)."""


class UnauthorizedCallerError(KeyServiceError):
    """The TLS peer chains to the service CA but is not the JoinService (PERMISSION_DENIED)."""

    def __init__(self, failures: Sequence[Failure]) -> None:
        self.failures: tuple[Failure, ...] = tuple(failures)
        super().__init__(
            f"caller refused: {render_failures(self.failures)}; only the JoinService, with the "
            "client certificate from the constellation-keyservice-client Secret, may call "
            "the KeyService"
        )
