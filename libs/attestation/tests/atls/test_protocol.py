"""The pure binding check both sides run on the other's evidence."""

from __future__ import annotations

import hashlib
import os

import pytest

from constellation.attestation.atls.protocol import MAX_EVIDENCE_SIZE, verify_peer_evidence
from constellation.attestation.errors import MalformedEvidenceError, ValidationError

KEY_HASH = hashlib.sha256(b"spki").digest()


def _verify(validators, document, nonce, expected=KEY_HASH, variant=None):
    return verify_peer_evidence(
        validators,
        variant=variant or validators[0].variant,
        document=document,
        nonce=nonce,
        expected_user_data=expected,
        subject="peer",
    )


def test_binding_accepted(double):
    nonce = os.urandom(32)
    evidence = _verify([double.validator()], double.issuer().issue(KEY_HASH, nonce), nonce)
    assert evidence.user_data == KEY_HASH


def test_every_failure_reported_once(double):
    nonce = os.urandom(32)
    document = double.issuer().issue(b"other key", nonce)
    with pytest.raises(ValidationError) as refused:
        _verify([double.validator()], document, nonce)
    assert [f.check for f in refused.value.failures] == ["atls.user_data"]
    assert refused.value.subject == "peer"


def test_validator_failures_come_first_and_all_of_them(double):
    nonce = os.urandom(32)
    document = double.issuer().issue(KEY_HASH, nonce)
    with pytest.raises(ValidationError) as refused:
        _verify([double.wrong_validator()], document, os.urandom(32))
    checks = [f.check for f in refused.value.failures]
    assert "double.extra_data" in checks
    assert "pcr[4]" in checks


def test_oversized_evidence_refused_unread(double):
    with pytest.raises(MalformedEvidenceError, match="exceeds"):
        _verify([double.validator()], b"x" * (MAX_EVIDENCE_SIZE + 1), os.urandom(32))


def test_no_validator_for_variant(double):
    with pytest.raises(ValidationError) as refused:
        _verify([double.validator()], b"{}", os.urandom(32), variant="aws-sev-snp")
    (failure,) = refused.value.failures
    assert failure.check == "atls.variant"
    assert failure.actual == "aws-sev-snp"
