"""The whole ``VtpmValidator.verify`` path on a vTPM evidence document.

The validator is built once (the test platform CA as root, a fixed clock); the base document
is a software TPM's quote over a replaying event log with an AK certificate from that CA, so it
verifies. ``_shapes.FieldFuzzer`` lets the fuzzer replace the whole document or one field
(binary fields - quote, signature, AK public, AK certificate, event log - as raw bytes).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime

from constellation.attestation.eventlog import (
    EV_EVENT_TAG,
    Event,
    TaggedEvent,
    encode_event_log,
    parse_event_log,
    replay,
)
from constellation.attestation.identity import Role
from constellation.attestation.measurements import Measurements
from constellation.attestation.testing.platform import cached_platform_ca, node_validator
from constellation.attestation.testing.softtpm import SoftwareTpmIssuer
from constellation.attestation.tpm import TPM_ALG_SHA256
from targets._shapes import FieldFuzzer

NONCE = bytes(range(32))
USER_DATA = b"fuzz"
# Fixed for the whole run (certificates are issued now, so "now" at import is inside them).
CLOCK = datetime.now(UTC)


def _document() -> dict[str, object]:
    data = TaggedEvent(1, b"fuzz boot").encode()
    event = Event(4, EV_EVENT_TAG, {TPM_ALG_SHA256: hashlib.sha256(data).digest()}, data)
    log = encode_event_log([event])
    pcrs = {i: bytes(32) for i in range(24)} | replay(parse_event_log(log))
    forger = SoftwareTpmIssuer(pcrs, log)
    forger.ak_certificate = cached_platform_ca().issue_ak_certificate(
        forger.ak_spki_der, "fuzz-node", Role.WORKER
    )
    return forger.document(USER_DATA, NONCE)


FIELDS = FieldFuzzer(_document())
_pcrs = json.loads(FIELDS.encoded)["pcrs"]
VALIDATOR = node_validator(
    Measurements.from_dict({"4": base64.b64decode(_pcrs["4"]).hex()}),
    clock=lambda: CLOCK,
)
VALIDATOR.verify(FIELDS.encoded, NONCE)  # the base document must verify, or the target is moot


def seeds() -> Iterator[bytes]:
    yield from FIELDS.seeds()


def target(data: bytes) -> None:
    VALIDATOR.verify(FIELDS.build(data), NONCE)
