"""Errors of mini mode (all ``CLIError``: rendered with a hint, exit code 1)."""

from __future__ import annotations

from constellation.cli.errors import CLIError


class MiniError(CLIError):
    """Root of mini mode's errors."""


class ImageError(MiniError):
    """A node image directory is missing, incomplete or not a node image."""


class ProcessStartError(MiniError):
    """A mini-mode process (swtpm, bootstrapper, service) did not start or exited early."""


class ClusterStateError(MiniError):
    """The mini cluster record in the workspace is missing or corrupt."""


class JoinTimeoutError(MiniError):
    """A node did not join within the bounded wait."""


class ApplyError(MiniError):
    """The first control-plane node refused or failed the init, or a later apply step failed."""
