"""Errors of the JoinService.

Every error the JoinService raises on purpose derives from ``JoinServiceError`` (itself a
``ConstellationError``). The gRPC layer maps the classes below to status codes in exactly one
place (``server.STATUS_CODES``); handlers never set status codes themselves. Messages name
what was expected, what was found and what to do; they never carry a key, a token or a CA key.

Refusals (PERMISSION_DENIED) all derive from ``RefusedError`` and carry ``failures``; the
subclasses exist so the decision log names the kind of refusal (``error=...``) and tests can
catch exactly one kind.
"""

from __future__ import annotations

import math
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
    """The disk UUID is already bound to a different attested node identity
    (``disk.bound_elsewhere``)."""


class UnknownDiskError(RefusedError):
    """A rejoin names a disk that no join ever bound (``disk.unknown``): a rejoin ticket only
    re-issues what an earlier join ticket gave the same identity, it never starts a binding."""


class NodeNameTakenError(RefusedError):
    """The node name is registered to a different attested identity (``node.name_taken``)."""


class AttestationSpentError(RefusedError):
    """This attestation already bought a ticket of the same kind (``attestation.spent``); the
    node must attest afresh (a new aTLS connection) for another one."""


class RateLimitedError(JoinServiceError):
    """Too many ticket requests, from one identity or overall. Maps to RESOURCE_EXHAUSTED.

    ``retry_after`` is the number of seconds after which the same request can be admitted;
    the message says it too. ``failures`` has the same shape as a refusal's, for the log.
    """

    def __init__(self, failure: Failure, *, retry_after: float) -> None:
        self.failures: tuple[Failure, ...] = (failure,)
        self.retry_after = retry_after
        super().__init__(
            f"ticket request rate-limited: {failure}; retry in {max(1, math.ceil(retry_after))} s"
        )


class UpstreamError(JoinServiceError):
    """A collaborator (KeyService, Kubernetes API) failed or is unreachable. Maps to
    UNAVAILABLE; the caller may retry."""


class NotReadyError(JoinServiceError):
    """The service has no valid ``join-config`` yet. Maps to UNAVAILABLE."""
