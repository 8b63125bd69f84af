"""The init secret: proof that an ``Init`` request comes from the admin who created the nodes.

The CLI generates a random init secret, puts only its bcrypt hash into the instance metadata of
every node, and sends the secret itself with ``Init``. The first node compares the two with
``bcrypt.checkpw`` (constant time with respect to the secret). A mismatch is answered with
PERMISSION_DENIED and nothing else (DESIGN.md §7: no logs to the caller); neither the secret nor
the hash ever appears in an error message.

bcrypt takes at most 72 bytes; longer secrets are refused instead of being silently truncated.
"""

from __future__ import annotations

import secrets

import bcrypt

from constellation.bootstrapper.errors import InitSecretHashError, InitSecretMismatchError

INIT_SECRET_LENGTH = 32
BCRYPT_MAX_SECRET_LENGTH = 72
DEFAULT_BCRYPT_COST = 12


class InitSecret:
    """The init secret as raw bytes; ``repr``/``str`` never show them."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        if not value or len(value) > BCRYPT_MAX_SECRET_LENGTH:
            raise InitSecretMismatchError(
                f"the init secret must be 1 to {BCRYPT_MAX_SECRET_LENGTH} bytes long, "
                f"got {len(value)}"
            )
        self._value = bytes(value)

    @classmethod
    def generate(cls) -> InitSecret:
        """A fresh random init secret (32 bytes)."""
        return cls(secrets.token_bytes(INIT_SECRET_LENGTH))

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "InitSecret(<redacted>)"

    __str__ = __repr__


def hash_init_secret(secret: InitSecret, *, cost: int = DEFAULT_BCRYPT_COST) -> bytes:
    """The bcrypt hash the CLI publishes in the instance metadata."""
    return bcrypt.hashpw(secret.reveal(), bcrypt.gensalt(rounds=cost))


def check_init_secret(secret: InitSecret | bytes, secret_hash: bytes) -> None:
    """Return if ``secret`` matches ``secret_hash``; raise a typed error otherwise.

    ``InitSecretMismatchError`` for a wrong secret, ``InitSecretHashError`` when the hash from
    the metadata is not a bcrypt hash (a misconfigured node, not an attack on it).
    """
    if not isinstance(secret, InitSecret):
        secret = InitSecret(secret)
    try:
        matches = bcrypt.checkpw(secret.reveal(), secret_hash)
    except ValueError as err:
        raise InitSecretHashError(
            "the init-secret hash in the instance metadata is not a valid bcrypt hash; "
            "recreate the node's metadata with the CLI"
        ) from err
    if not matches:
        raise InitSecretMismatchError("the init secret does not match; the request is refused")
