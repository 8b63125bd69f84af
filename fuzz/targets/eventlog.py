"""TCG crypto-agile event logs: parse, replay, the data checks, replay against quoted PCRs.

Seeds are logs the project's encoder writes (what mini mode's firmware produces), with tagged
events, several banks and the typical boot chain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from constellation.attestation.eventlog import (
    DEFAULT_REPLAY_PCRS,
    EV_EVENT_TAG,
    EV_IPL,
    Event,
    TaggedEvent,
    check_event_data,
    check_replay,
    encode_event_log,
    encode_header,
    extended_pcrs,
    parse_event_log,
    replay,
)
from constellation.attestation.tpm import TPM_ALG_SHA1, TPM_ALG_SHA256

ZERO_PCRS = {i: bytes(32) for i in range(24)}


def seeds() -> Iterator[bytes]:
    yield encode_header()
    tagged = TaggedEvent(0x434F4E53, b"cluster").encode()
    yield encode_event_log(
        [
            Event.measure(4, b"kernel"),
            Event.measure(9, b"initrd"),
            Event.measure(11, b"uki"),
            Event(15, EV_EVENT_TAG, {TPM_ALG_SHA256: hashlib.sha256(tagged).digest()}, tagged),
        ]
    )
    yield encode_event_log(
        [Event(4, EV_IPL, {TPM_ALG_SHA256: bytes(32), TPM_ALG_SHA1: bytes(20)}, b"two banks")],
        {TPM_ALG_SHA256: 32, TPM_ALG_SHA1: 20},
    )


def target(data: bytes) -> None:
    log = parse_event_log(data)
    pcrs = replay(log)
    extended_pcrs(log)
    check_event_data(log)
    check_replay(log, ZERO_PCRS | pcrs, DEFAULT_REPLAY_PCRS)
    check_replay(log, ZERO_PCRS, DEFAULT_REPLAY_PCRS)
