"""Errors of the attestation library and the project-wide root exception.

Every component depends on this library, so the project's root exception lives here:
``ConstellationError``. Each package derives its own root from it (``KeyServiceError``, ...),
so a caller can catch "anything this project raised on purpose" in one place and a traceback
never has to reach a user.

A validation failure carries *every* failed check (keylime style), never just the first, so an
operator sees in one go why a node was refused. Failures never contain secrets: they name
checks and show public values (PCR digests, TCB versions, policy fields).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any


class ConstellationError(Exception):
    """Root of every error this project raises on purpose."""


class AttestationError(ConstellationError):
    """Root of the attestation library's errors."""


class MalformedEvidenceError(AttestationError):
    """Evidence (a document, a quote, a report, a certificate) could not be parsed.

    Raised before any check runs: the input is not of the expected shape or length.
    """


@dataclass(frozen=True)
class Failure:
    """One failed (or, if not enforced, merely suspicious) check.

    ``check`` is a stable, machine-readable name such as ``"pcr[4]"``,
    ``"snp.reported_tcb"`` or ``"quote.signature"``; ``expected`` and ``actual`` are short
    human-readable renderings of public values.
    """

    check: str
    expected: str
    actual: str
    enforced: bool = True
    detail: str = ""

    def __str__(self) -> str:
        text = f"{self.check}: expected {self.expected}, got {self.actual}"
        if self.detail:
            text += f" ({self.detail})"
        return text if self.enforced else f"{text} [warn-only]"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def render_failures(failures: Iterable[Failure]) -> str:
    """Render failures as one readable paragraph for logs and the CLI."""
    return "; ".join(str(f) for f in failures)


class ValidationError(AttestationError):
    """Evidence was parsed but did not satisfy the checks.

    ``failures`` lists every enforced check that failed; ``warnings`` lists warn-only
    mismatches that were found on the way (they alone never cause a rejection).
    """

    def __init__(
        self,
        failures: Sequence[Failure],
        warnings: Sequence[Failure] = (),
        *,
        subject: str = "attestation",
    ) -> None:
        self.failures: tuple[Failure, ...] = tuple(failures)
        self.warnings: tuple[Failure, ...] = tuple(warnings)
        self.subject = subject
        count = len(self.failures)
        noun = "check" if count == 1 else "checks"
        super().__init__(
            f"{subject} rejected, {count} failed {noun}: {render_failures(self.failures)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "failures": [f.to_dict() for f in self.failures],
            "warnings": [w.to_dict() for w in self.warnings],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
