"""``constellation verify``'s judgement: only VerificationService evidence, bounded answers."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from constellation.attestation.atls.protocol import atls_user_data
from constellation.attestation.errors import Failure, ValidationError
from constellation.attestation.evidence import (
    VERIFY_USER_DATA_LABEL,
    VerifiedEvidence,
    extra_data,
)
from constellation.attestation.measurements import Measurement, Measurements
from constellation.bootstrapper.metadata import Endpoint
from constellation.cli.errors import VerifyError
from constellation.cli.nodeverify import VERIFY_USER_DATA, judge, request_attestation_http

PCRS = {4: b"\x04" * 32, 15: b"\x0f" * 32}
MEASUREMENTS = Measurements({i: Measurement(v) for i, v in PCRS.items()})


@dataclass
class MacEvidence:
    """Evidence double: a MAC over (user_data, framed binding); the key stands in for a TPM."""

    key: bytes
    variant: str = "test-mac"

    def issue(self, user_data: bytes, nonce: bytes) -> bytes:
        body = {"user_data": user_data.hex(), "bound": extra_data(user_data, nonce).hex()}
        text = json.dumps(body, sort_keys=True)
        mac = hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()
        return json.dumps({"body": text, "mac": mac}).encode()

    def verify(self, document: bytes, nonce: bytes) -> VerifiedEvidence:
        outer = json.loads(document)
        expected_mac = hmac.new(self.key, outer["body"].encode(), hashlib.sha256).hexdigest()
        body = json.loads(outer["body"])
        user_data = bytes.fromhex(body["user_data"])
        failures = []
        if not hmac.compare_digest(outer["mac"], expected_mac):
            failures.append(Failure("mac", "valid", "invalid"))
        if bytes.fromhex(body["bound"]) != extra_data(user_data, nonce):
            failures.append(Failure("extra_data", "bound to our nonce", "another binding"))
        if failures:
            raise ValidationError(failures)
        return VerifiedEvidence(self.variant, user_data, PCRS)

    def validate(self, document: bytes, nonce: bytes) -> bytes:
        return self.verify(document, nonce).user_data


def _judge(user_data: bytes, nonce: bytes | None = None) -> dict:
    evidence = MacEvidence(os.urandom(32))
    nonce = nonce or os.urandom(32)
    document = evidence.issue(user_data, nonce)
    report = judge(
        evidence, MEASUREMENTS, document, nonce, endpoint="127.0.0.1:1", cluster_id=b"c" * 32
    )
    return report.to_dict()


def test_verification_service_evidence_is_accepted():
    assert VERIFY_USER_DATA == VERIFY_USER_DATA_LABEL == b"constellation/verify/v1\x00"
    report = _judge(VERIFY_USER_DATA_LABEL)
    assert report["verified"] is True
    assert report["failures"] == []


def test_atls_evidence_of_a_genuine_node_is_refused():
    """Label separation: evidence a node issued for aTLS is not an answer to ``verify``."""
    report = _judge(atls_user_data(hashlib.sha256(b"a TLS key").digest()))
    assert report["verified"] is False
    (failure,) = report["failures"]
    assert failure["check"] == "user_data"
    assert failure["expected"] == "constellation/verify/v1\\0"
    assert failure["actual"].startswith("0x" + b"constellation/atls/v1\x00".hex())


@pytest.mark.parametrize("user_data", [b"VerifyService", b"", b"constellation/verify/v1"])
def test_legacy_or_truncated_labels_are_refused(user_data):
    report = _judge(user_data)
    assert report["verified"] is False
    assert [f["check"] for f in report["failures"]] == ["user_data"]


@pytest.fixture
def answering(http_answering: Any) -> Iterator[tuple[Endpoint, list[bytes]]]:
    """A loopback HTTP server answering ``GET /`` with the next queued body."""
    bodies: list[bytes] = []
    with http_answering(lambda _path: bodies.pop(0)) as port:
        yield Endpoint("127.0.0.1", port), bodies


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,  # a node that answers with a recursion bomb
        b'{"data": ' * 50_000 + b"1" + b"}" * 50_000,
        b'{"data": NaN}',
        b"[]",
        b"\xff",
    ],
)
def test_hostile_http_answer_is_a_verify_error(answering, body):
    endpoint, bodies = answering
    bodies.append(body)
    with pytest.raises(VerifyError, match="malformed answer"):
        request_attestation_http(endpoint, os.urandom(32), timeout=5)
