"""Key material that cannot leak through a log line, an error message or a debugger.

Every component hands secrets around: disk keys, the measurement secret, bootstrap tokens,
control-plane private keys. They travel as :class:`SecretBytes`, whose ``repr``/``str`` show
only the length, so a stray ``log.info(..., key=key)`` or an f-string in an exception prints
``<redacted>`` instead of the key. The raw bytes come out through :meth:`SecretBytes.reveal`,
called once, where the value goes on the wire or to cryptsetup, which makes every such place
easy to find in review.
"""

from __future__ import annotations

import hmac
from typing import NoReturn


class SecretBytes:
    """Bytes that never show themselves; compared in constant time; never hashed.

    Hashing is refused because a secret used as a dict key or set member would be compared
    and bucketed by a fast, non-constant-time hash.
    """

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = bytes(value)

    def reveal(self) -> bytes:
        """The raw bytes, for the single place they must leave the process."""
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<redacted {len(self._value)} bytes>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, SecretBytes)
        return hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} is not hashable: it would leak through hash tables")

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} cannot be pickled: it would leave the process")
