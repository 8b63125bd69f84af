"""Structure-aware inputs shared by the attestation targets (not a target: the name starts with
``_``).

Random bytes rarely get past a JSON parser into the interesting parts of a valid document, so a
target can hold one valid document and let the first input byte choose what to fuzz:

- ``0``: the input after it is the whole document;
- ``k`` (1..): field ``k`` of the document is replaced by the rest. A field that held base64
  gets the base64 of the rest (so the fuzzer reaches the binary structure inside: a quote, a
  report, a certificate); any other field gets the rest parsed as JSON, or as a string.

``splice`` does the same for binary structures: overwrite bytes at a chosen offset.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import struct
from collections.abc import Iterator
from typing import Any

from constellation.attestation.boundedparse import DocumentParseError, loads_json

MAX_FIELDS = 254


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if prefix:
        yield prefix
    if isinstance(value, dict):
        for key in sorted(value):
            yield from _paths(value[key], (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _binary(value: Any) -> bytes | None:
    if not isinstance(value, str) or len(value) < 4:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


class FieldFuzzer:
    """One valid JSON document whose fields the fuzzer replaces one at a time."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.encoded = json.dumps(document, sort_keys=True).encode()
        self.paths = list(_paths(document))[:MAX_FIELDS]

    def _get(self, path: tuple[Any, ...]) -> Any:
        value: Any = self.document
        for key in path:
            value = value[key]
        return value

    def seeds(self) -> Iterator[bytes]:
        """The whole document, and every binary field on its own behind its selector."""
        yield b"\x00" + self.encoded
        for index, path in enumerate(self.paths, start=1):
            raw = _binary(self._get(path))
            if raw is not None:
                yield bytes([index]) + raw

    def build(self, data: bytes) -> bytes:
        """The document the input describes (see the module docstring)."""
        if not data or data[0] == 0 or data[0] > len(self.paths):
            return data[1:]
        path = self.paths[data[0] - 1]
        rest = data[1:]
        replacement: Any
        if _binary(self._get(path)) is not None:
            replacement = base64.b64encode(rest).decode()
        else:
            try:
                replacement = loads_json(rest)
            except DocumentParseError:
                replacement = rest.decode("latin-1")
        document = copy.deepcopy(self.document)
        parent: Any = document
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = replacement
        return json.dumps(document, sort_keys=True).encode()


def splice(original: bytes, data: bytes) -> bytes:
    """``original`` with ``data[2:]`` written at offset ``data[0:2]`` (big-endian, wrapped)."""
    if len(data) < 2:
        return original
    (offset,) = struct.unpack(">H", data[:2])
    offset %= len(original) + 1
    patch = data[2:]
    return original[:offset] + patch + original[offset + len(patch) :]


def split(data: bytes, parts: int) -> list[bytes]:
    """``data`` cut into ``parts`` pieces by u16 length prefixes (the last piece takes the rest)."""
    pieces = []
    for _ in range(parts - 1):
        if len(data) < 2:
            pieces.append(b"")
            continue
        (size,) = struct.unpack(">H", data[:2])
        pieces.append(data[2 : 2 + size])
        data = data[2 + size :]
    pieces.append(data)
    return pieces


def join(*pieces: bytes) -> bytes:
    """The inverse of ``split``: what a seed for it looks like."""
    out = b""
    for piece in pieces[:-1]:
        out += struct.pack(">H", len(piece)) + piece
    return out + pieces[-1]
