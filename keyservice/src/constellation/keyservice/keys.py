"""Data keys: ``GetDataKey(id, L) = HKDF-SHA256(master_key, master_salt, "key-" + id, L)``.

Nothing is stored; the same id always yields the same key (DESIGN.md §3). The master secret
lives in ``MasterSecret``, whose ``repr`` is redacted so it cannot leak through a log call or
a traceback's locals.
"""

from __future__ import annotations

from dataclasses import dataclass

from constellation.attestation.kdf import derive_key
from constellation.keyservice.errors import ConfigError, InvalidRequestError

#: DESIGN.md §3: master key of at least 16 bytes (default 32), master salt of 32 bytes.
MIN_MASTER_KEY_SIZE = 16
MIN_SALT_SIZE = 32
#: Upper bound of one data key. Disk keys are 32 bytes; 4096 leaves room for any sane use and
#: keeps a request from asking for HKDF's 8160-byte maximum in a loop.
MAX_DATA_KEY_LENGTH = 4096
#: Upper bound of a data key id (ids are disk UUIDs and short names).
MAX_DATA_KEY_ID_LENGTH = 256
DATA_KEY_INFO_PREFIX = "key-"


@dataclass(frozen=True, repr=False)
class MasterSecret:
    """The cluster's master key and salt. Validated on creation; never printed."""

    key: bytes
    salt: bytes

    def __post_init__(self) -> None:
        if len(self.key) < MIN_MASTER_KEY_SIZE:
            raise ConfigError(
                f"master key must be at least {MIN_MASTER_KEY_SIZE} bytes, got {len(self.key)}"
            )
        if len(self.salt) < MIN_SALT_SIZE:
            raise ConfigError(
                f"master salt must be at least {MIN_SALT_SIZE} bytes, got {len(self.salt)}"
            )

    def __repr__(self) -> str:
        return f"MasterSecret(key=<{len(self.key)} bytes redacted>, salt=<redacted>)"


def check_request(data_key_id: str, length: int) -> None:
    """Raise ``InvalidRequestError`` unless (id, length) names a sane data key."""
    problems = []
    if not data_key_id:
        problems.append("data_key_id must not be empty")
    elif len(data_key_id) > MAX_DATA_KEY_ID_LENGTH:
        problems.append(
            f"data_key_id must be at most {MAX_DATA_KEY_ID_LENGTH} characters, "
            f"got {len(data_key_id)}"
        )
    if not 0 < length <= MAX_DATA_KEY_LENGTH:
        problems.append(f"length must be 1..{MAX_DATA_KEY_LENGTH} bytes, got {length}")
    if problems:
        raise InvalidRequestError("; ".join(problems))


class DataKeys:
    """Derives data keys from the master secret."""

    def __init__(self, secret: MasterSecret) -> None:
        self._secret = secret

    def __repr__(self) -> str:
        return "DataKeys(<master secret redacted>)"

    def derive(self, data_key_id: str, length: int) -> bytes:
        check_request(data_key_id, length)
        return derive_key(
            self._secret.key, self._secret.salt, DATA_KEY_INFO_PREFIX + data_key_id, length
        )
