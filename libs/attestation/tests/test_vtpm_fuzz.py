"""Hostile vTPM documents: every field of a valid document replaced by every JSON type, and
seeded byte mutations of the whole document. Each outcome is a verdict or a typed error
(``ValidationError`` / ``MalformedEvidenceError``), never another exception.

``CONSTELLATION_FUZZ_ITERATIONS`` raises the byte-mutation count for long runs (default 2,000 in
the test command); the parsers under test are pure, so a run needs no TPM.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
from collections.abc import Iterator
from typing import Any

import pytest

from constellation.attestation.errors import MalformedEvidenceError, ValidationError
from constellation.attestation.identity.errors import PlatformRootError
from constellation.attestation.identity.verify import load_platform_roots
from constellation.attestation.measurements import Measurements
from constellation.attestation.testing.platform import (
    cached_platform_ca,
    certified_software_document,
    node_validator,
)

ITERATIONS = int(os.environ.get("CONSTELLATION_FUZZ_ITERATIONS", "2000"))
NONCE = bytes(range(32))
USER_DATA = b"fuzz"
HOSTILE_VALUES: tuple[Any, ...] = (
    None,
    0,
    -1,
    2**70,
    1.5,
    float("nan"),
    True,
    "",
    "@@",
    "²",
    [],
    {},
    [[[[]]]],
    {"a": {"b": {}}},
    "A" * 5000,
)


def _document() -> dict[str, Any]:
    return certified_software_document(USER_DATA, NONCE)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path into a JSON value (dict keys and list indices)."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _judge(document: bytes) -> bool:
    """True if the document verified; typed refusals are False, anything else raises."""
    validator = node_validator(Measurements())
    with contextlib.suppress(ValidationError, MalformedEvidenceError):
        validator.verify(document, NONCE)
        return True
    return False


def test_the_fuzz_seed_document_is_valid() -> None:
    evidence = node_validator(Measurements()).verify(json.dumps(_document()).encode(), NONCE)
    assert evidence.identity is not None
    assert evidence.identity.name == "fuzz-node"


def test_every_field_replaced_by_every_json_type_is_refused_typed() -> None:
    original = _document()
    paths = [p for p in _paths(original) if p]
    for path in paths:
        for value in HOSTILE_VALUES:
            mutated = copy.deepcopy(original)
            target = mutated
            for key in path[:-1]:
                target = target[key]
            unchanged = json.dumps(target[path[-1]]) == json.dumps(value)
            target[path[-1]] = value
            accepted = _judge(json.dumps(mutated).encode())
            assert unchanged or not accepted, f"{path} = {value!r} was accepted"


def test_seeded_byte_mutations_are_refused_typed() -> None:
    rng = random.Random(20261204)
    original = json.dumps(_document()).encode()
    for _ in range(ITERATIONS):
        data = bytearray(original)
        for _ in range(rng.randint(1, 8)):
            choice = rng.random()
            position = rng.randrange(len(data))
            if choice < 0.5:
                data[position] = rng.randrange(256)
            elif choice < 0.75:
                del data[position : position + rng.randint(1, 16)]
            else:
                data[position:position] = bytes(
                    rng.randrange(256) for _ in range(rng.randint(1, 8))
                )
        _judge(bytes(data))


@pytest.mark.parametrize("seed", range(4))
def test_mutated_platform_root_bundles_load_or_are_typed_errors(seed: int) -> None:
    rng = random.Random(seed)
    original = cached_platform_ca().cert_pem
    for _ in range(ITERATIONS // 8):
        data = bytearray(original)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        with contextlib.suppress(PlatformRootError):
            load_platform_roots(bytes(data))
