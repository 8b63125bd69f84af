"""Errors of the bootstrapper.

``BootstrapperError`` is the package root; it derives from the project root
``ConstellationError`` so the CLI and the node's entry point can catch everything raised on
purpose in one place. Messages name what was expected, what was found and what to do; they
never contain a secret (keys, passphrases, init secrets), only paths and public facts.
"""

from __future__ import annotations

from constellation.attestation.errors import ConstellationError


class BootstrapperError(ConstellationError):
    """Root of every error the bootstrapper raises on purpose."""


class AtomicWriteError(BootstrapperError):
    """A state file could not be written and replaced atomically; the old file is untouched."""


class StateDiskError(BootstrapperError):
    """A LUKS2 operation on the state disk failed (format, read UUID, rekey, dump)."""


class StateDiskKeyError(StateDiskError):
    """The state disk rejected a key: no keyslot opens with it."""


class CryptsetupMissingError(StateDiskError):
    """The ``cryptsetup`` binary is not installed or not executable."""


class InitSecretError(BootstrapperError):
    """Root of errors while checking the init secret sent with ``Init``."""


class InitSecretMismatchError(InitSecretError):
    """The init secret does not match the hash from the instance metadata."""


class InitSecretHashError(InitSecretError):
    """The init-secret hash from the instance metadata is not a usable bcrypt hash."""


class MetadataError(BootstrapperError):
    """The instance metadata is missing, unreadable or does not follow its schema."""


class NodeStateError(BootstrapperError):
    """The persisted node state is missing, unreadable or corrupt."""
