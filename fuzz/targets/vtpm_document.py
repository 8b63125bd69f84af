"""The whole ``VtpmValidator.verify`` path on a vTPM evidence document.

The validator is built once (the test platform CA as root, a fixed clock); the base document
is a software TPM's quote over a replaying event log with an AK certificate from that CA, so it
verifies. ``_shapes.FieldFuzzer`` lets the fuzzer replace the whole document or one field
(binary fields - quote, signature, AK public, AK certificate, event log - as raw bytes).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime

from constellation.attestation.measurements import Measurements
from constellation.attestation.testing.platform import certified_software_document, node_validator
from targets._shapes import FieldFuzzer

NONCE = bytes(range(32))
USER_DATA = b"fuzz"
# Fixed for the whole run (certificates are issued now, so "now" at import is inside them).
CLOCK = datetime.now(UTC)


FIELDS = FieldFuzzer(certified_software_document(USER_DATA, NONCE))
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
