"""The AK certificate profile: what a platform writes, and what a validator requires.

An AK certificate is an X.509 v3 end-entity certificate, signed by a platform CA, whose subject
public key is the node's attestation key (ECDSA P-256 or RSA), exactly as it appears in the
quote's ``TPMT_PUBLIC``. It states two facts the node itself cannot forge:

- the instance name: subject CN, a DNS label (``[a-z0-9]([-a-z0-9]*[a-z0-9])?``, 1..63
  characters), with O = ``constellation-platform``;
- the role: the non-critical extension ``NODE_ROLE_OID`` whose value is a DER UTF8String,
  ``control-plane`` or ``worker``.

And it is usable for nothing else: extended key usage ``AK_CERTIFICATE_EKU`` (TCG's AK
certificate purpose), key usage digitalSignature only, basic constraints CA=false. Issuing
(``identity.ca``) and verification (``identity.verify``) both take these constants from here,
so the two sides cannot drift apart.
"""

from __future__ import annotations

import re

from cryptography import x509

from constellation.attestation.identity import Role
from constellation.attestation.identity.errors import InvalidIdentityError

# TCG EK Credential Profile: tcg-kp-AIKCertificate, the EKU of an attestation key certificate.
AK_CERTIFICATE_EKU = x509.ObjectIdentifier("2.23.133.8.3")
# Under this project's arc (1.3.9900, next to the variant OIDs): the node's role.
NODE_ROLE_OID = x509.ObjectIdentifier("1.3.9900.5.2.1")
PLATFORM_ORGANIZATION = "constellation-platform"

MAX_NAME_LENGTH = 63
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_UTF8_STRING_TAG = 0x0C
# Short-form DER lengths only: a role is a few ASCII characters.
_MAX_SHORT_LENGTH = 0x7F


def is_instance_name(name: str) -> bool:
    """Whether ``name`` is a DNS label of 1..63 characters, the only names a node may carry.

    Names end up in Kubernetes node names, log lines and file names; a label alphabet keeps
    every one of those places free of escaping questions.
    """
    return 0 < len(name) <= MAX_NAME_LENGTH and _NAME.fullmatch(name) is not None


def check_instance_name(name: str) -> str:
    """``name`` if it is a valid instance name, else ``InvalidIdentityError`` saying why."""
    if not is_instance_name(name):
        raise InvalidIdentityError(
            f"instance name {name[:80]!r} is not a DNS label: expected 1..{MAX_NAME_LENGTH} "
            "characters of a-z, 0-9 and '-', starting and ending with a letter or digit; "
            "choose a name of that form"
        )
    return name


def encode_role(role: Role) -> bytes:
    """The role extension's value: the role as a DER UTF8String."""
    value = Role(role).value.encode()
    return bytes((_UTF8_STRING_TAG, len(value))) + value


def decode_role(value: bytes) -> Role:
    """The role in a role extension's value; ``InvalidIdentityError`` unless it is exactly a
    DER UTF8String naming a known role (no trailing bytes, no long-form length)."""
    if len(value) < 2 or value[0] != _UTF8_STRING_TAG:
        raise InvalidIdentityError("role extension: expected a DER UTF8String")
    length = value[1]
    if length > _MAX_SHORT_LENGTH or len(value) != 2 + length:
        raise InvalidIdentityError("role extension: UTF8String length does not match its value")
    try:
        text = value[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidIdentityError("role extension: value is not UTF-8") from None
    try:
        return Role(text)
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise InvalidIdentityError(
            f"role extension: {text[:32]!r} is not a role (known: {known})"
        ) from None


__all__ = [
    "AK_CERTIFICATE_EKU",
    "MAX_NAME_LENGTH",
    "NODE_ROLE_OID",
    "PLATFORM_ORGANIZATION",
    "check_instance_name",
    "decode_role",
    "encode_role",
    "is_instance_name",
]
