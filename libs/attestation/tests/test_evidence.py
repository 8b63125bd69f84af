"""The evidence binding: length-framed, domain-separated, and purpose labels kept apart."""

from __future__ import annotations

import pytest

from constellation.attestation.atls.protocol import atls_user_data
from constellation.attestation.evidence import (
    ATLS_USER_DATA_LABEL,
    EVIDENCE_BINDING_LABEL,
    VERIFY_USER_DATA_LABEL,
    extra_data,
)


def test_binding_vector():
    """Fixed bytes in, fixed digest out: the framing is a wire fact, never to drift."""
    assert EVIDENCE_BINDING_LABEL == b"constellation/evidence/v1\x00"
    assert (
        extra_data(b"user", bytes(range(32))).hex()
        == "ed79caa0da1d1063e042e1cece566bbc708d43e25ba7ab633d74be8783709353"
    )
    assert (
        extra_data(b"", b"").hex()
        == "0c6e5132ca385d66a11d8b15b42756f99b3178e07abbf6f44865dbe35c70aa96"
    )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ((b"ab", b"c"), (b"a", b"bc")),  # the same concatenation, split differently
        ((b"", b"abc"), (b"abc", b"")),
        ((b"\x00\x00\x00\x01a", b""), (b"", b"\x00\x00\x00\x01a")),
    ],
)
def test_framing_separates_every_split(first, second):
    assert extra_data(*first) != extra_data(*second)


def test_binding_is_not_the_unframed_hash():
    import hashlib

    assert extra_data(b"u", b"n") != hashlib.sha256(b"un").digest()


def test_purpose_labels_are_distinct_and_prefix_free():
    labels = [EVIDENCE_BINDING_LABEL, ATLS_USER_DATA_LABEL, VERIFY_USER_DATA_LABEL]
    assert len(set(labels)) == len(labels)
    for label in labels:
        assert label.endswith(b"\x00")
        assert not any(other != label and other.startswith(label) for other in labels)


def test_atls_user_data_is_label_and_key_hash():
    digest = bytes(range(32))
    assert atls_user_data(digest) == b"constellation/atls/v1\x00" + digest
    assert not atls_user_data(digest).startswith(VERIFY_USER_DATA_LABEL)
    with pytest.raises(ValueError, match="32 bytes"):
        atls_user_data(b"short")
