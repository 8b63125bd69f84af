"""TCG crypto-agile event log: round trip, strict parsing and replay against PCR values."""

from __future__ import annotations

import hashlib
import struct

import pytest

from constellation.attestation.errors import MalformedEvidenceError
from constellation.attestation.eventlog import (
    EV_NO_ACTION,
    EV_SEPARATOR,
    SPEC_ID_SIGNATURE,
    STARTUP_LOCALITY_SIGNATURE,
    TPM_ALG_SHA1,
    TPM_ALG_SHA256,
    Event,
    append_event,
    check_replay,
    encode_event,
    encode_event_log,
    encode_header,
    parse_event_log,
    replay,
)

ZERO = bytes(32)


def extend(value: bytes, digest: bytes) -> bytes:
    return hashlib.sha256(value + digest).digest()


def quoted(**values: bytes) -> dict[int, bytes]:
    pcrs = {i: ZERO for i in range(24)}
    pcrs.update({int(k[1:]): v for k, v in values.items()})
    return pcrs


def test_round_trip_and_replay() -> None:
    events = [
        Event.measure(4, b"kernel"),
        Event.measure(4, b"cmdline"),
        Event.measure(9, b"initrd"),
    ]
    log = parse_event_log(encode_event_log(events))
    assert log.algorithms == {TPM_ALG_SHA256: 32}
    assert log.events == tuple(events)
    pcr4 = extend(
        extend(ZERO, hashlib.sha256(b"kernel").digest()), hashlib.sha256(b"cmdline").digest()
    )
    pcr9 = extend(ZERO, hashlib.sha256(b"initrd").digest())
    assert replay(log)[4] == pcr4
    assert check_replay(log, quoted(p4=pcr4, p9=pcr9)) == []


def test_append_builds_the_same_log() -> None:
    events = [Event.measure(4, b"a"), Event.measure(11, b"b")]
    log = b""
    for event in events:
        log = append_event(log, event)
    assert log == encode_event_log(events)


def test_replay_names_every_wrong_pcr() -> None:
    log = parse_event_log(encode_event_log([Event.measure(4, b"kernel"), Event.measure(9, b"x")]))
    good4 = replay(log)[4]
    failures = check_replay(log, quoted(p4=good4, p9=b"\x01" * 32, p11=b"\x02" * 32))
    assert [f.check for f in failures] == ["eventlog.replay[pcr9]", "eventlog.replay[pcr11]"]


def test_empty_log_does_not_explain_measured_pcrs() -> None:
    log = parse_event_log(encode_event_log([]))
    assert log.events == ()
    assert check_replay(log, quoted()) == []
    failures = check_replay(log, quoted(p4=b"\x01" * 32))
    assert [f.check for f in failures] == ["eventlog.replay[pcr4]"]


def test_missing_quoted_pcr_fails() -> None:
    log = parse_event_log(encode_event_log([]))
    pcrs = quoted()
    del pcrs[7]
    assert [f.actual for f in check_replay(log, pcrs)] == ["missing"]


def test_pcr15_is_outside_the_default_range() -> None:
    log = parse_event_log(encode_event_log([]))
    assert check_replay(log, quoted(p15=b"\x05" * 32)) == []
    assert len(check_replay(log, quoted(p15=b"\x05" * 32), pcrs=range(16))) == 1


def test_no_action_events_and_startup_locality() -> None:
    locality = Event(0, EV_NO_ACTION, {TPM_ALG_SHA256: ZERO}, STARTUP_LOCALITY_SIGNATURE + b"\x03")
    separator = Event(
        0, EV_SEPARATOR, {TPM_ALG_SHA256: hashlib.sha256(bytes(4)).digest()}, bytes(4)
    )
    log = parse_event_log(encode_event_log([locality, separator]))
    assert log.startup_locality == 3
    start = bytes(31) + b"\x03"
    assert replay(log)[0] == extend(start, hashlib.sha256(bytes(4)).digest())


def test_multi_bank_log_replays_sha256() -> None:
    banks = {TPM_ALG_SHA1: 20, TPM_ALG_SHA256: 32}
    event = Event(
        4,
        0xD,
        {
            TPM_ALG_SHA1: hashlib.sha1(b"k").digest(),  # noqa: S324 (the TPM's SHA-1 bank)
            TPM_ALG_SHA256: hashlib.sha256(b"k").digest(),
        },
        b"k",
    )
    log = parse_event_log(encode_event_log([event], banks))
    assert replay(log)[4] == extend(ZERO, hashlib.sha256(b"k").digest())
    sha1_only = parse_event_log(encode_event_log([], {TPM_ALG_SHA1: 20}))
    with pytest.raises(MalformedEvidenceError, match="SHA-256"):
        replay(sha1_only)


def test_writer_rejects_inconsistent_events() -> None:
    with pytest.raises(MalformedEvidenceError):
        encode_event(Event(24, 0xD, {TPM_ALG_SHA256: ZERO}))
    with pytest.raises(MalformedEvidenceError):
        encode_event(Event(4, 0xD, {TPM_ALG_SHA256: b"short"}))
    with pytest.raises(MalformedEvidenceError):
        encode_event(Event(4, 0xD, {TPM_ALG_SHA1: bytes(20)}))


def test_every_truncation_is_malformed() -> None:
    data = encode_event_log([Event.measure(4, b"kernel"), Event.measure(9, b"initrd")])
    header_size = len(encode_header())
    for size in range(len(data)):
        if size == header_size:
            continue  # a header alone is a valid, empty log
        if size == header_size + len(encode_event(Event.measure(4, b"kernel"))):
            continue  # so is the log cut after its first complete event
        with pytest.raises(MalformedEvidenceError):
            parse_event_log(data[:size])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 100,
        # header claiming another event type
        struct.pack("<II", 0, 1) + bytes(20) + struct.pack("<I", 0),
        # Spec ID with a wrong signature
        encode_header().replace(SPEC_ID_SIGNATURE, b"Spec ID Event00\x00"),
        # event naming PCR 30
        encode_header()
        + struct.pack("<IIIH", 30, 0xD, 1, TPM_ALG_SHA256)
        + ZERO
        + struct.pack("<I", 0),
        # event with an undeclared digest algorithm
        encode_header()
        + struct.pack("<IIIH", 4, 0xD, 1, TPM_ALG_SHA1)
        + ZERO
        + struct.pack("<I", 0),
        # event with a wrong digest count
        encode_header() + struct.pack("<III", 4, 0xD, 2),
        # event claiming a huge body
        encode_header()
        + struct.pack("<IIIH", 4, 0xD, 1, TPM_ALG_SHA256)
        + ZERO
        + struct.pack("<I", 1 << 30),
    ],
)
def test_garbage_is_malformed(data: bytes) -> None:
    with pytest.raises(MalformedEvidenceError):
        parse_event_log(data)
