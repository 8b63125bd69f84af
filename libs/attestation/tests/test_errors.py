from __future__ import annotations

import json

from constellation.attestation import AttestationError, ConstellationError, ValidationError
from constellation.attestation.errors import Failure


def test_validation_error_lists_every_failure() -> None:
    failures = [
        Failure("pcr[4]", "aa" * 4, "bb" * 4),
        Failure("quote.nonce", "fresh nonce", "other nonce"),
    ]
    err = ValidationError(failures, [Failure("pcr[9]", "00", "11", enforced=False)])
    assert isinstance(err, AttestationError)
    assert isinstance(err, ConstellationError)
    text = str(err)
    assert "2 failed checks" in text
    assert "pcr[4]" in text
    assert "quote.nonce" in text
    data = json.loads(err.to_json())
    assert [f["check"] for f in data["failures"]] == ["pcr[4]", "quote.nonce"]
    assert data["warnings"][0]["enforced"] is False


def test_warn_only_failure_renders_as_warning() -> None:
    assert str(Failure("pcr[9]", "00", "11", enforced=False)).endswith("[warn-only]")
