"""TCG PC Client crypto-agile event log: writer, parser, replay and the checks of a log.

Layout (TCG PC Client Platform Firmware Profile, little-endian throughout):

1. One ``TCG_PCR_EVENT`` header in the legacy SHA-1 format: pcrIndex u32 (0), eventType u32
   (``EV_NO_ACTION``), digest[20] (zeros), eventSize u32, then the ``TCG_EfiSpecIDEvent``:
   signature ``"Spec ID Event03\\0"``, platformClass u32, specVersionMinor u8,
   specVersionMajor u8, specErrata u8, uintnSize u8, numberOfAlgorithms u32,
   ``{algorithmId u16, digestSize u16}`` x n, vendorInfoSize u8, vendorInfo.
2. ``TCG_PCR_EVENT2`` records: pcrIndex u32, eventType u32, digest count u32,
   ``{hashAlg u16, digest[size from the header]}`` x count, eventSize u32, event.

Invariant upheld by :func:`check_replay` (the one check a validator runs on a log): a log that
passes it tells the truth about every PCR it speaks of.

- Replay: every PCR starts at zero (PCR 0 at the locality of a ``StartupLocality`` no-action
  event, if any) and is extended with each event's SHA-256 digest. Each PCR of the checked set
  (default 0..23) that at least one event extends must equal the quoted value. A PCR the log
  never extends is not compared: the log makes no claim about it, and the expected
  measurements decide it. That is how PCR 15 stays out of replay (the node lock extends it with
  ``TPM2_PCR_Event`` and writes no log entry), yet an event that names PCR 15 must replay.
- Range: an event for a PCR outside the checked set is itself a failure
  (``eventlog.pcr_range``), so a caller that narrows the set cannot be handed events it ignores.
- Data: for the event types in :data:`DATA_BOUND_EVENT_TYPES` the specification defines the
  digest as the hash of the event data, so every bank's digest must equal that bank's hash of
  the data (``eventlog.event[<n>].data``): the data of such an event cannot be rewritten while
  its digest is kept. Other types (``EV_IPL``, ``EV_POST_CODE``, ...) measure something the log
  does not carry (a kernel, a firmware volume); they are replayed, their data is not checked and
  must be read as a label only.

Parsing is bounded (log size, event count, event size, digest sizes) and any inconsistency in
the bytes is a ``MalformedEvidenceError``; semantic findings are ``Failure`` values collected
for the caller to raise once.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from constellation.attestation.errors import Failure, MalformedEvidenceError

EV_POST_CODE = 0x00000001
EV_NO_ACTION = 0x00000003
EV_SEPARATOR = 0x00000004
EV_ACTION = 0x00000005
EV_EVENT_TAG = 0x00000006
EV_COMPACT_HASH = 0x0000000C
EV_IPL = 0x0000000D
EV_EFI_ACTION = 0x80000007

# Event types whose digest the TCG PC Client Platform Firmware Profile defines as the hash of
# the event data itself, so a verifier can recompute it from the log alone:
# - EV_SEPARATOR: the digest is of the 4-byte separator value the event carries;
# - EV_ACTION: the digest is of the action string the event carries;
# - EV_EVENT_TAG: the digest is of the whole TCG_PCClientTaggedEvent the event carries;
# - EV_EFI_ACTION: the digest is of the EFI action string the event carries.
# Types left out either measure something the log does not hold (EV_IPL, EV_POST_CODE,
# EV_EFI_BOOT_SERVICES_APPLICATION: the code itself) or are hashed differently by firmware in
# the field (EV_EFI_VARIABLE_BOOT: some hash the whole UEFI_VARIABLE_DATA, some only the value).
DATA_BOUND_EVENT_TYPES: frozenset[int] = frozenset(
    {EV_SEPARATOR, EV_ACTION, EV_EVENT_TAG, EV_EFI_ACTION}
)

TPM_ALG_SHA1 = 0x0004
TPM_ALG_SHA256 = 0x000B
TPM_ALG_SHA384 = 0x000C
TPM_ALG_SHA512 = 0x000D
SHA256_SIZE = 32
# The banks this module can recompute, with their hashlib names and digest sizes. A log that
# declares one of them with another size is malformed; other algorithms are carried but never
# recomputed (only the SHA-256 bank is replayed).
HASH_ALGORITHMS: Mapping[int, tuple[str, int]] = {
    TPM_ALG_SHA1: ("sha1", 20),
    TPM_ALG_SHA256: ("sha256", SHA256_SIZE),
    TPM_ALG_SHA384: ("sha384", 48),
    TPM_ALG_SHA512: ("sha512", 64),
}

SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
STARTUP_LOCALITY_SIGNATURE = b"StartupLocality\x00"
HEADER_DIGEST_SIZE = 20
SPEC_VERSION_MAJOR = 2
SPEC_VERSION_MINOR = 0
SPEC_ERRATA = 0
UINTN_SIZE_64 = 2
PLATFORM_CLASS_CLIENT = 0

U8 = struct.Struct("<B")
U16 = struct.Struct("<H")
U32 = struct.Struct("<I")
ALGORITHM_ENTRY = struct.Struct("<HH")
SPEC_ID_FIXED = struct.Struct("<16sIBBBBI")  # signature .. numberOfAlgorithms
EVENT_HEADER = struct.Struct("<II")  # pcrIndex, eventType
TAGGED_EVENT_HEADER = struct.Struct("<II")  # taggedEventID, taggedEventDataSize

MAX_LOG_SIZE = 16 << 20
MAX_EVENTS = 10_000
MAX_EVENT_DATA = 1 << 20
MAX_ALGORITHMS = 8
MAX_DIGEST_SIZE = 64  # SHA-512
PCR_COUNT = 24
MAX_LISTED = 8  # offending events named in one failure message
# Every PCR may be named by the log; only those it extends are replayed (see the module page).
DEFAULT_REPLAY_PCRS = tuple(range(PCR_COUNT))


@dataclass(frozen=True)
class Event:
    """One measured event: which PCR, what kind, the digests per bank and the event data."""

    pcr: int
    event_type: int
    digests: Mapping[int, bytes] = field(default_factory=dict)
    data: bytes = b""

    @classmethod
    def measure(cls, pcr: int, data: bytes, *, event_type: int = EV_IPL) -> Event:
        """An event whose SHA-256 digest is the hash of ``data`` itself."""
        return cls(pcr, event_type, {TPM_ALG_SHA256: hashlib.sha256(data).digest()}, data)


@dataclass(frozen=True)
class TaggedEvent:
    """A ``TCG_PCClientTaggedEvent``: taggedEventID u32, taggedEventDataSize u32, data.

    The payload of an ``EV_EVENT_TAG`` event. Its digest is the hash of the whole encoding, so
    everything it says (here: what was measured and that thing's hash) is bound into the PCR.
    """

    event_id: int
    data: bytes

    def encode(self) -> bytes:
        if not 0 <= self.event_id <= 0xFFFFFFFF:
            raise MalformedEvidenceError(f"tagged event: id {self.event_id} is not a u32")
        if len(self.data) > MAX_EVENT_DATA - TAGGED_EVENT_HEADER.size:
            raise MalformedEvidenceError(
                f"tagged event: {len(self.data)} bytes of data exceed the event size limit"
            )
        return TAGGED_EVENT_HEADER.pack(self.event_id, len(self.data)) + self.data

    @classmethod
    def parse(cls, data: bytes) -> TaggedEvent:
        """Parse exactly one tagged event; a size field that disagrees is malformed."""
        reader = _Reader(data)
        event_id, size = reader.unpack(TAGGED_EVENT_HEADER, "tagged event header")
        if size != reader.remaining():
            raise MalformedEvidenceError(
                f"tagged event: size field says {size} bytes of data, the event carries "
                f"{reader.remaining()}"
            )
        return cls(event_id, reader.take(size, "tagged event data"))


@dataclass(frozen=True)
class EventLog:
    """A parsed log: the digest sizes declared by the Spec ID event and the events."""

    algorithms: Mapping[int, int]
    events: tuple[Event, ...]
    startup_locality: int = 0


class _Reader:
    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(bytes(data))
        self._pos = 0

    def take(self, size: int, what: str) -> bytes:
        if size < 0 or self._pos + size > len(self._data):
            raise MalformedEvidenceError(
                f"event log: truncated at {what} (need {size} bytes at offset {self._pos}, "
                f"have {len(self._data) - self._pos})"
            )
        chunk = bytes(self._data[self._pos : self._pos + size])
        self._pos += size
        return chunk

    def unpack(self, layout: struct.Struct, what: str) -> tuple[Any, ...]:
        return tuple(layout.unpack(self.take(layout.size, what)))

    def remaining(self) -> int:
        return len(self._data) - self._pos


def _spec_id_event(algorithms: Mapping[int, int]) -> bytes:
    body = SPEC_ID_FIXED.pack(
        SPEC_ID_SIGNATURE,
        PLATFORM_CLASS_CLIENT,
        SPEC_VERSION_MINOR,
        SPEC_VERSION_MAJOR,
        SPEC_ERRATA,
        UINTN_SIZE_64,
        len(algorithms),
    )
    body += b"".join(ALGORITHM_ENTRY.pack(alg, size) for alg, size in sorted(algorithms.items()))
    return body + U8.pack(0)  # no vendor info


def encode_header(algorithms: Mapping[int, int] | None = None) -> bytes:
    """The ``TCG_PCR_EVENT`` header carrying the Spec ID event (SHA-256 only by default)."""
    spec = _spec_id_event(algorithms or {TPM_ALG_SHA256: SHA256_SIZE})
    return (
        EVENT_HEADER.pack(0, EV_NO_ACTION) + bytes(HEADER_DIGEST_SIZE) + U32.pack(len(spec)) + spec
    )


def encode_event(event: Event, algorithms: Mapping[int, int] | None = None) -> bytes:
    """One ``TCG_PCR_EVENT2`` record; its digests must match the declared algorithms."""
    declared = algorithms or {TPM_ALG_SHA256: SHA256_SIZE}
    if not 0 <= event.pcr < PCR_COUNT:
        raise MalformedEvidenceError(f"event log: PCR index {event.pcr} out of range")
    if set(event.digests) != set(declared):
        raise MalformedEvidenceError(
            "event log: an event must carry exactly one digest per declared algorithm"
        )
    out = [EVENT_HEADER.pack(event.pcr, event.event_type), U32.pack(len(declared))]
    for alg, size in sorted(declared.items()):
        digest = event.digests[alg]
        if len(digest) != size:
            raise MalformedEvidenceError(
                f"event log: digest for algorithm 0x{alg:04x} has {len(digest)} bytes, not {size}"
            )
        out.append(U16.pack(alg) + digest)
    out.append(U32.pack(len(event.data)) + event.data)
    return b"".join(out)


def encode_event_log(events: Iterable[Event], algorithms: Mapping[int, int] | None = None) -> bytes:
    """A complete log: the header followed by every event."""
    return encode_header(algorithms) + b"".join(encode_event(e, algorithms) for e in events)


def append_event(log: bytes, event: Event) -> bytes:
    """``log`` with ``event`` appended (a new SHA-256 log when ``log`` is empty)."""
    if not log:
        return encode_event_log([event])
    parsed = parse_event_log(log)
    return log + encode_event(event, parsed.algorithms)


def _parse_spec_id(data: bytes) -> dict[int, int]:
    reader = _Reader(data)
    signature, _platform, _minor, major, _errata, _uintn, count = reader.unpack(
        SPEC_ID_FIXED, "Spec ID event"
    )
    if signature != SPEC_ID_SIGNATURE:
        raise MalformedEvidenceError("event log: first event is not a 'Spec ID Event03' header")
    if major != SPEC_VERSION_MAJOR:
        raise MalformedEvidenceError(f"event log: spec version {major} is not crypto-agile (2)")
    if not 0 < count <= MAX_ALGORITHMS:
        raise MalformedEvidenceError(f"event log: {count} digest algorithms is implausible")
    algorithms: dict[int, int] = {}
    for index in range(count):
        alg, size = reader.unpack(ALGORITHM_ENTRY, f"algorithm[{index}]")
        if not 0 < size <= MAX_DIGEST_SIZE or alg in algorithms:
            raise MalformedEvidenceError(f"event log: bad digest size entry for 0x{alg:04x}")
        known = HASH_ALGORITHMS.get(alg)
        if known is not None and known[1] != size:
            raise MalformedEvidenceError(
                f"event log: the header declares {known[0]} (0x{alg:04x}) with {size}-byte "
                f"digests, expected {known[1]}"
            )
        algorithms[alg] = size
    (vendor_size,) = reader.unpack(U8, "vendorInfoSize")
    reader.take(vendor_size, "vendorInfo")
    if reader.remaining():
        raise MalformedEvidenceError("event log: trailing bytes in the Spec ID event")
    return algorithms


def parse_event_log(data: bytes) -> EventLog:
    """Parse a crypto-agile log; any truncation or inconsistency is ``MalformedEvidenceError``."""
    if len(data) > MAX_LOG_SIZE:
        raise MalformedEvidenceError(
            f"event log: {len(data)} bytes exceed the {MAX_LOG_SIZE}-byte limit; a boot log is "
            "far smaller, check what the node attached"
        )
    reader = _Reader(data)
    pcr, event_type = reader.unpack(EVENT_HEADER, "header")
    reader.take(HEADER_DIGEST_SIZE, "header digest")
    (size,) = reader.unpack(U32, "header eventSize")
    if pcr != 0 or event_type != EV_NO_ACTION or size > MAX_EVENT_DATA:
        raise MalformedEvidenceError("event log: missing TCG_PCR_EVENT Spec ID header")
    algorithms = _parse_spec_id(reader.take(size, "Spec ID event"))
    events: list[Event] = []
    locality = 0
    while reader.remaining():
        if len(events) >= MAX_EVENTS:
            raise MalformedEvidenceError(f"event log: more than {MAX_EVENTS} events")
        position = len(events)
        pcr, event_type = reader.unpack(EVENT_HEADER, f"event[{position}]")
        if pcr >= PCR_COUNT:
            raise MalformedEvidenceError(f"event log: event[{position}] names PCR {pcr}")
        (count,) = reader.unpack(U32, f"event[{position}].digests.count")
        if count != len(algorithms):
            raise MalformedEvidenceError(
                f"event log: event[{position}] has {count} digests, header declares "
                f"{len(algorithms)}"
            )
        digests: dict[int, bytes] = {}
        for _ in range(count):
            (alg,) = reader.unpack(U16, f"event[{position}].hashAlg")
            if alg not in algorithms or alg in digests:
                raise MalformedEvidenceError(
                    f"event log: event[{position}] has an undeclared or repeated 0x{alg:04x}"
                )
            digests[alg] = reader.take(algorithms[alg], f"event[{position}].digest")
        (size,) = reader.unpack(U32, f"event[{position}].eventSize")
        if size > MAX_EVENT_DATA:
            raise MalformedEvidenceError(f"event log: event[{position}] claims {size} bytes")
        body = reader.take(size, f"event[{position}].event")
        if (
            event_type == EV_NO_ACTION
            and pcr == 0
            and body.startswith(STARTUP_LOCALITY_SIGNATURE)
            and len(body) == len(STARTUP_LOCALITY_SIGNATURE) + 1
        ):
            locality = body[-1]
        events.append(Event(pcr, event_type, digests, body))
    return EventLog(algorithms, tuple(events), locality)


def replay(log: EventLog) -> dict[int, bytes]:
    """The SHA-256 PCR values the log implies (only PCRs it touches, plus PCR 0)."""
    if TPM_ALG_SHA256 not in log.algorithms:
        raise MalformedEvidenceError("event log: no SHA-256 digests, cannot replay that bank")
    values: dict[int, bytes] = {0: bytes(SHA256_SIZE - 1) + bytes([log.startup_locality])}
    for event in log.events:
        if event.event_type == EV_NO_ACTION:
            continue
        current = values.get(event.pcr, bytes(SHA256_SIZE))
        values[event.pcr] = hashlib.sha256(current + event.digests[TPM_ALG_SHA256]).digest()
    return values


def _render_pcrs(pcrs: Iterable[int]) -> str:
    """``0..14,16`` style: short and unambiguous for failure messages."""
    ordered = sorted(set(pcrs))
    runs: list[str] = []
    index = 0
    while index < len(ordered):
        end = index
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        first, last = ordered[index], ordered[end]
        runs.append(str(first) if first == last else f"{first}..{last}")
        index = end + 1
    return ",".join(runs) or "none"


def extended_pcrs(log: EventLog) -> frozenset[int]:
    """The PCRs at least one event of ``log`` extends (no-action events extend nothing)."""
    return frozenset(e.pcr for e in log.events if e.event_type != EV_NO_ACTION)


def check_event_data(log: EventLog) -> list[Failure]:
    """Events of a data-bound type whose digests are not the hashes of their data.

    Without this, the data of such an event is only a label: it could be rewritten (a
    different tag, a different action string) while the digest that replays is kept. Each
    bank this module can hash is checked; an ``EV_EVENT_TAG`` must also hold exactly one
    well-formed ``TCG_PCClientTaggedEvent``.
    """
    failures: list[Failure] = []
    for position, event in enumerate(log.events):
        if event.event_type not in DATA_BOUND_EVENT_TYPES:
            continue
        expected: list[str] = []
        actual: list[str] = []
        for alg, digest in sorted(event.digests.items()):
            known = HASH_ALGORITHMS.get(alg)
            if known is None:
                continue
            recomputed = hashlib.new(known[0], event.data).digest()
            if recomputed != digest:
                expected.append(f"{known[0]}:{recomputed.hex()}")
                actual.append(f"{known[0]}:{digest.hex()}")
        if expected:
            failures.append(
                Failure(
                    f"eventlog.event[{position}].data",
                    ", ".join(expected),
                    ", ".join(actual),
                    detail=(
                        f"event type 0x{event.event_type:08x} is hashed from its data; the "
                        "data was changed after measuring or the digest was made up"
                    ),
                )
            )
        if event.event_type == EV_EVENT_TAG:
            try:
                TaggedEvent.parse(event.data)
            except MalformedEvidenceError as err:
                failures.append(
                    Failure(
                        f"eventlog.event[{position}].tagged",
                        "one TCG_PCClientTaggedEvent (id u32, size u32, data[size])",
                        f"{len(event.data)} bytes that do not parse ({err})",
                    )
                )
    return failures


def check_replay(
    log: EventLog,
    quoted_pcrs: Mapping[int, bytes],
    pcrs: Sequence[int] = DEFAULT_REPLAY_PCRS,
) -> list[Failure]:
    """Every way ``log`` misstates the quoted PCRs or its own data, as failures.

    Compares exactly the PCRs of ``pcrs`` that an event extends (a PCR the log never names is
    left to the measurements; see the module page), reports events for PCRs outside ``pcrs``
    (``eventlog.pcr_range``) and events whose data disagrees with their digests
    (:func:`check_event_data`). Raises ``MalformedEvidenceError`` if the log has no SHA-256
    bank to replay.
    """
    checked = frozenset(pcrs)
    replayed = replay(log)
    failures: list[Failure] = []
    for index in sorted(extended_pcrs(log) & checked):
        expected = replayed[index]
        actual = quoted_pcrs.get(index)
        if actual != expected:
            failures.append(
                Failure(
                    f"eventlog.replay[pcr{index}]",
                    expected.hex(),
                    "missing" if actual is None else actual.hex(),
                    detail="the event log does not replay to the quoted PCR",
                )
            )
    outside = [
        f"event[{position}] extends PCR {event.pcr}"
        for position, event in enumerate(log.events)
        if event.event_type != EV_NO_ACTION and event.pcr not in checked
    ]
    if outside:
        shown = "; ".join(outside[:MAX_LISTED])
        if len(outside) > MAX_LISTED:
            shown += f"; and {len(outside) - MAX_LISTED} more"
        failures.append(
            Failure(
                "eventlog.pcr_range",
                f"events only for PCRs {_render_pcrs(checked)}",
                shown,
                detail="the log describes PCRs this validator does not replay; refuse it",
            )
        )
    failures.extend(check_event_data(log))
    return failures
