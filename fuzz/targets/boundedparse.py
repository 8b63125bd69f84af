"""The bounded JSON and YAML loaders every untrusted document goes through.

The first input byte picks the loader and the bounds (the defaults, or tight ones so that the
bound checks themselves are exercised); the rest is the document.
"""

from __future__ import annotations

from collections.abc import Iterator

from constellation.attestation.boundedparse import load_yaml, loads_json


def seeds() -> Iterator[bytes]:
    yield b'\x00{"version": 1, "pcrs": {"4": "AAAA"}, "list": [1, 2.5, null, true, "\\u00b2"]}'
    yield b"\x01measurements:\n  4: {expected: '00', warnOnly: false}\n  - &a [1, *a]\n"
    yield b"\x02[[[[[]]]]]"
    yield b"\x03a: &x [1]\nb: *x\nc: *x\n? [1]\n: 2\n"


def target(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 4, data[1:]
    if mode == 0:
        loads_json(rest)
    elif mode == 1:
        load_yaml(rest)
    elif mode == 2:
        loads_json(rest, max_depth=3, max_size=256)
    else:
        load_yaml(rest, max_depth=3, max_size=256, max_aliases=2, unique_keys=False)
