"""Errors of the CLI.

``CLIError`` is the package root (from the project root ``ConstellationError``). Every error
carries, besides its message (what happened), a ``hint``: what the operator should do next. The
root command renders both and exits with code 1; errors from other packages (attestation,
bootstrapper) are rendered the same way, with a generic hint.
"""

from __future__ import annotations

from constellation.attestation.errors import ConstellationError


class CLIError(ConstellationError):
    """Root of the CLI's errors; ``hint`` says what to do next."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


class WorkspaceError(CLIError):
    """A workspace file is missing, unreadable or corrupt."""


class ConfigError(CLIError):
    """The configuration file does not follow the schema; the message lists every key path."""


class ConfigExistsError(ConfigError):
    """``config generate`` would overwrite an existing configuration."""


class FetchError(CLIError):
    """Signed measurements or their signature could not be fetched."""


class VerifyError(CLIError):
    """A node could not be reached or asked for its attestation."""


class KubernetesAPIError(CLIError):
    """The Kubernetes API server gave a definitive answer that the CLI cannot use (403, 404,
    a kubeconfig that does not load): asking again does not help."""


class APIServerUnavailableError(KubernetesAPIError):
    """The Kubernetes API server did not answer (refused, timed out) or answered 429/5xx: it
    may be restarting, so a bounded wait may retry."""
