"""TCG crypto-agile event log: round trip, strict parsing and replay against PCR values."""

from __future__ import annotations

import hashlib
import struct

import pytest

from constellation.attestation.errors import MalformedEvidenceError
from constellation.attestation.eventlog import (
    DATA_BOUND_EVENT_TYPES,
    DEFAULT_REPLAY_PCRS,
    EV_ACTION,
    EV_EFI_ACTION,
    EV_EVENT_TAG,
    EV_IPL,
    EV_NO_ACTION,
    EV_POST_CODE,
    EV_SEPARATOR,
    MAX_LOG_SIZE,
    SPEC_ID_SIGNATURE,
    STARTUP_LOCALITY_SIGNATURE,
    TPM_ALG_SHA1,
    TPM_ALG_SHA256,
    TPM_ALG_SHA384,
    Event,
    TaggedEvent,
    append_event,
    check_event_data,
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
    events = [Event.measure(4, b"kernel"), Event.measure(9, b"x"), Event.measure(11, b"y")]
    log = parse_event_log(encode_event_log(events))
    good4 = replay(log)[4]
    failures = check_replay(log, quoted(p4=good4, p9=b"\x01" * 32, p11=b"\x02" * 32))
    assert [f.check for f in failures] == ["eventlog.replay[pcr9]", "eventlog.replay[pcr11]"]
    assert failures[0].expected == replay(log)[9].hex()
    assert failures[0].actual == (b"\x01" * 32).hex()


def test_pcrs_the_log_never_extends_are_not_compared() -> None:
    # The log speaks of PCR 4 only; PCR 7 (measured by something unlogged) and PCRs 17..22
    # (all ones until a DRTM launch) are for the measurements to judge, not for replay.
    log = parse_event_log(encode_event_log([Event.measure(4, b"kernel")]))
    others = {f"p{i}": b"\xff" * 32 for i in (7, 17, 18, 19, 20, 21, 22)}
    assert check_replay(log, quoted(p4=replay(log)[4], **others)) == []
    empty = parse_event_log(encode_event_log([]))
    assert empty.events == ()
    assert check_replay(empty, quoted(p4=b"\x01" * 32, p15=b"\x05" * 32)) == []


def test_no_action_events_do_not_make_a_pcr_compared() -> None:
    note = Event(9, EV_NO_ACTION, {TPM_ALG_SHA256: ZERO}, b"a note, not a measurement")
    log = parse_event_log(encode_event_log([note]))
    assert check_replay(log, quoted(p9=b"\x01" * 32)) == []


def test_missing_quoted_pcr_fails() -> None:
    log = parse_event_log(encode_event_log([Event.measure(7, b"secure boot policy")]))
    pcrs = quoted()
    del pcrs[7]
    assert [f.actual for f in check_replay(log, pcrs)] == ["missing"]


def test_pcr15_is_unchecked_until_the_log_names_it() -> None:
    node_lock = b"\x05" * 32  # extended by TPM2_PCR_Event, no log entry
    unlogged = parse_event_log(encode_event_log([]))
    assert check_replay(unlogged, quoted(p15=node_lock)) == []
    named = parse_event_log(encode_event_log([Event.measure(15, b"cluster id")]))
    failures = check_replay(named, quoted(p15=node_lock))
    assert [f.check for f in failures] == ["eventlog.replay[pcr15]"]
    assert check_replay(named, quoted(p15=replay(named)[15])) == []


@pytest.mark.parametrize("pcr", [16, 23])
def test_a_made_up_event_for_a_high_pcr_is_refused(pcr: int) -> None:
    kernel = Event.measure(4, b"kernel")
    made_up = Event.measure(pcr, b"nothing was measured here")
    log = parse_event_log(encode_event_log([kernel, made_up]))
    pcr4 = replay(log)[4]
    failures = check_replay(log, quoted(p4=pcr4))
    assert [f.check for f in failures] == [f"eventlog.replay[pcr{pcr}]"]
    assert failures[0].actual == ZERO.hex()


def test_events_outside_the_checked_set_are_refused() -> None:
    events = [Event.measure(4, b"kernel"), Event.measure(16, b"debug"), Event.measure(23, b"app")]
    log = parse_event_log(encode_event_log(events))
    values = replay(log)
    pcrs = quoted(p4=values[4], p16=values[16], p23=values[23])
    assert check_replay(log, pcrs) == []
    failures = check_replay(log, pcrs, pcrs=range(15))
    assert [f.check for f in failures] == ["eventlog.pcr_range"]
    assert failures[0].expected == "events only for PCRs 0..14"
    assert failures[0].actual == "event[1] extends PCR 16; event[2] extends PCR 23"


def test_the_default_set_is_every_pcr() -> None:
    assert tuple(DEFAULT_REPLAY_PCRS) == tuple(range(24))


def test_failure_lists_stay_short_for_hostile_logs() -> None:
    log = parse_event_log(encode_event_log([Event.measure(16, b"x")] * 50))
    (failure,) = [f for f in check_replay(log, quoted(), pcrs=range(15))]
    assert failure.actual.endswith("and 42 more")


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


# -- data against digest ----------------------------------------------------------------------

TAGGED = TaggedEvent(0x434D0004, b"image manifest").encode()
GENUINE = {
    EV_SEPARATOR: bytes(4),
    EV_ACTION: b"Calling EFI Application from Boot Option",
    EV_EVENT_TAG: TAGGED,
    EV_EFI_ACTION: b"Exit Boot Services Invocation",
}


def test_the_data_bound_types_are_the_ones_the_spec_hashes_from_data() -> None:
    assert set(GENUINE) == DATA_BOUND_EVENT_TYPES
    assert EV_IPL not in DATA_BOUND_EVENT_TYPES
    assert EV_POST_CODE not in DATA_BOUND_EVENT_TYPES


@pytest.mark.parametrize("event_type", sorted(GENUINE))
def test_genuine_data_bound_events_pass(event_type: int) -> None:
    log = parse_event_log(
        encode_event_log([Event.measure(5, GENUINE[event_type], event_type=event_type)])
    )
    assert check_event_data(log) == []
    assert check_replay(log, quoted(p5=replay(log)[5])) == []


@pytest.mark.parametrize("event_type", sorted(GENUINE))
def test_rewritten_data_with_the_digest_kept_is_refused(event_type: int) -> None:
    original = GENUINE[event_type]
    forged = bytes(b ^ 0x01 for b in original)  # same length: only the data bytes change
    data = encode_event_log([Event.measure(5, original, event_type=event_type)])
    assert data.endswith(original)  # the only event: its data closes the log
    log = parse_event_log(data[: -len(original)] + forged)
    assert log.events[0].data == forged
    failures = check_replay(log, quoted(p5=replay(log)[5]))  # the digest still replays
    assert [f.check for f in failures if f.check.endswith(".data")] == ["eventlog.event[0].data"]
    (failure,) = [f for f in failures if f.check.endswith(".data")]
    assert failure.expected == f"sha256:{hashlib.sha256(forged).hexdigest()}"
    assert failure.actual == f"sha256:{hashlib.sha256(original).hexdigest()}"


def test_every_bank_must_hash_the_data() -> None:
    banks = {TPM_ALG_SHA1: 20, TPM_ALG_SHA256: 32, TPM_ALG_SHA384: 48}
    data = b"Exit Boot Services Invocation"
    digests = {
        TPM_ALG_SHA1: hashlib.sha1(data).digest(),  # noqa: S324 (the TPM's SHA-1 bank)
        TPM_ALG_SHA256: hashlib.sha256(data).digest(),
        TPM_ALG_SHA384: hashlib.sha384(data).digest(),
    }
    genuine = parse_event_log(encode_event_log([Event(5, EV_EFI_ACTION, digests, data)], banks))
    assert check_event_data(genuine) == []
    wrong_sha1 = {**digests, TPM_ALG_SHA1: bytes(20)}
    event = Event(5, EV_EFI_ACTION, wrong_sha1, data)
    forged = parse_event_log(encode_event_log([genuine.events[0], event], banks))
    (failure,) = check_event_data(forged)
    assert failure.check == "eventlog.event[1].data"
    assert failure.expected == f"sha1:{digests[TPM_ALG_SHA1].hex()}"
    assert failure.actual == f"sha1:{bytes(20).hex()}"


def test_types_without_a_data_relation_are_replayed_but_not_checked() -> None:
    # EV_IPL measures code the log does not carry: its data is a label, never compared.
    event = Event(4, EV_IPL, {TPM_ALG_SHA256: hashlib.sha256(b"kernel").digest()}, b"any label")
    log = parse_event_log(encode_event_log([event]))
    assert check_event_data(log) == []
    assert check_replay(log, quoted(p4=bytes(32))) != []


def test_a_tagged_event_round_trips_and_its_size_must_agree() -> None:
    assert TaggedEvent.parse(TAGGED) == TaggedEvent(0x434D0004, b"image manifest")
    assert TAGGED[:8] == struct.pack("<II", 0x434D0004, len(b"image manifest"))
    for broken in (TAGGED[:7], TAGGED[:-1], TAGGED + b"x"):
        with pytest.raises(MalformedEvidenceError, match="tagged event"):
            TaggedEvent.parse(broken)


def test_an_event_tag_that_is_not_a_tagged_event_is_refused() -> None:
    untagged = Event.measure(5, b"free text", event_type=EV_EVENT_TAG)
    log = parse_event_log(encode_event_log([untagged]))
    (failure,) = check_replay(log, quoted(p5=replay(log)[5]))
    assert failure.check == "eventlog.event[0].tagged"


def test_a_known_algorithm_with_the_wrong_size_is_malformed() -> None:
    with pytest.raises(MalformedEvidenceError, match="expected 32"):
        parse_event_log(encode_event_log([], {TPM_ALG_SHA256: 20}))


def test_an_oversized_log_is_malformed() -> None:
    with pytest.raises(MalformedEvidenceError, match="limit"):
        parse_event_log(encode_header() + bytes(MAX_LOG_SIZE))
