"""Hostile bytes: every mutation of a valid log either parses or is ``MalformedEvidenceError``.

The parser and the checks run on bytes a node chose. Whatever those bytes are, the caller must
see a parsed log (whose checks then return failures) or the one typed error, never an
``IndexError``, ``struct.error`` or ``UnicodeDecodeError`` that would escape the error mapping.
"""

from __future__ import annotations

import hashlib
import random
import struct

from constellation.attestation.errors import MalformedEvidenceError
from constellation.attestation.eventlog import (
    EV_EFI_ACTION,
    EV_EVENT_TAG,
    EV_NO_ACTION,
    EV_SEPARATOR,
    STARTUP_LOCALITY_SIGNATURE,
    TPM_ALG_SHA1,
    TPM_ALG_SHA256,
    Event,
    TaggedEvent,
    check_replay,
    encode_event_log,
    parse_event_log,
    replay,
)

SEED = 20240610
MUTATIONS = 2000
BANKS = {TPM_ALG_SHA1: 20, TPM_ALG_SHA256: 32}


def _event(pcr: int, event_type: int, data: bytes) -> Event:
    digests = {
        TPM_ALG_SHA1: hashlib.sha1(data).digest(),  # noqa: S324 (the TPM's SHA-1 bank)
        TPM_ALG_SHA256: hashlib.sha256(data).digest(),
    }
    return Event(pcr, event_type, digests, data)


def _valid_log() -> bytes:
    return encode_event_log(
        [
            _event(0, EV_NO_ACTION, STARTUP_LOCALITY_SIGNATURE + b"\x03"),
            _event(0, EV_SEPARATOR, bytes(4)),
            _event(4, EV_EVENT_TAG, TaggedEvent(7, b"manifest " + bytes(32)).encode()),
            _event(9, 0xD, b"initrd"),
            _event(15, EV_EFI_ACTION, b"Exit Boot Services Invocation"),
        ],
        BANKS,
    )


def _mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four edits of the kinds a forger or a broken transport makes."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(6)
        position = rng.randrange(len(out) + 1) if out else 0
        if kind == 0 and out:  # flip one bit
            index = min(position, len(out) - 1)
            out[index] ^= 1 << rng.randrange(8)
        elif kind == 1 and out:  # overwrite a u32 with an edge value
            index = min(position, max(len(out) - 4, 0))
            edge = rng.choice([0, 1, 23, 24, 0xFF, 0xFFFF, 1 << 20, (1 << 20) + 1, 0xFFFFFFFF])
            out[index : index + 4] = struct.pack("<I", edge)[: len(out) - index]
        elif kind == 2:  # insert random bytes
            out[position:position] = rng.randbytes(rng.randint(1, 40))
        elif kind == 3 and out:  # delete a run
            del out[position : position + rng.randint(1, 40)]
        elif kind == 4:  # truncate
            del out[position:]
        else:  # duplicate a slice (repeated events, repeated digests)
            start = rng.randrange(len(out) + 1) if out else 0
            out[position:position] = out[start : start + rng.randint(1, 80)]
    return bytes(out)


def test_every_mutation_parses_or_is_malformed() -> None:
    rng = random.Random(SEED)
    valid = _valid_log()
    zeros = {index: bytes(32) for index in range(24)}
    outcomes = {"parsed": 0, "malformed": 0}
    for _ in range(MUTATIONS):
        mutated = _mutate(valid, rng)
        try:
            log = parse_event_log(mutated)
            failures = check_replay(log, zeros)
        except MalformedEvidenceError:
            outcomes["malformed"] += 1
            continue
        outcomes["parsed"] += 1
        assert all(f.check.startswith("eventlog.") for f in failures)
    # Both outcomes must occur, or the mutations were too weak (or too strong) to mean much.
    assert outcomes["parsed"] > 50
    assert outcomes["malformed"] > 50
    assert sum(outcomes.values()) == MUTATIONS


def test_the_unmutated_log_is_consistent() -> None:
    log = parse_event_log(_valid_log())
    assert log.startup_locality == 3
    replayed = {i: bytes(32) for i in range(24)}
    replayed.update(replay(log))
    assert check_replay(log, replayed) == []
