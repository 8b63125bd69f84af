"""Errors of platform identity: configuring platform roots, running a platform CA.

A *verification* outcome is never one of these: an AK certificate that does not verify is a
``Failure`` in the validator's ``ValidationError`` (its check names start with
``ak.certificate``), so one rejection lists every reason. These errors are for the trusted
side's own inputs: a platform root bundle that is not one, a CA key that does not match its
certificate, a name or key that the certificate profile cannot carry.
"""

from __future__ import annotations

from constellation.attestation.errors import AttestationError


class IdentityError(AttestationError):
    """Root of the platform-identity errors."""


class PlatformRootError(IdentityError):
    """The configured platform root certificates are unusable (none, not CAs, too many)."""


class PlatformCAError(IdentityError):
    """A platform CA could not be loaded, or cannot certify the key it was given."""


class InvalidIdentityError(IdentityError):
    """A name or role does not fit the AK certificate profile (see ``identity.profile``)."""
