"""Nonce rules of the VerificationService (shared by gRPC and HTTP)."""

from __future__ import annotations

import base64

import pytest

from constellation.attestation.evidence import ATLS_USER_DATA_LABEL, VERIFY_USER_DATA_LABEL
from constellation.verificationservice.errors import InvalidNonceError
from constellation.verificationservice.evidence import (
    MAX_NONCE_SIZE,
    MAX_QUERY_LENGTH,
    MIN_NONCE_SIZE,
    USER_DATA,
    check_nonce,
    nonce_from_query,
)

NONCE = bytes(range(32))


def _b64url(data: bytes, *, pad: bool) -> str:
    text = base64.urlsafe_b64encode(data).decode()
    return text if pad else text.rstrip("=")


@pytest.mark.parametrize("pad", [True, False])
def test_base64url_nonce_accepted_with_or_without_padding(pad):
    assert nonce_from_query("nonce=" + _b64url(NONCE, pad=pad)) == NONCE
    # the alphabet's URL-safe characters decode as such
    assert nonce_from_query("nonce=" + "-_-_" * 6) == base64.urlsafe_b64decode("-_-_" * 6)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "missing"),
        ("other=1", "missing"),
        ("nonce=", "empty"),
        ("nonce", "empty"),
        ("nonce=AAAA&nonce=BBBB", "once"),
        ("nonce=AA+A", "base64url"),  # '+' arrives as a space: standard base64 is refused
        ("nonce=AA%2FA", "base64url"),  # '/' is not base64url
        ("nonce=AAA!", "base64url"),
        ("nonce=A", "not valid base64url"),
        ("nonce=AA=A", "base64url"),
        ("nonce=" + _b64url(b"x" * (MAX_NONCE_SIZE + 1), pad=False), "16 to 64 random bytes"),
        ("nonce=" + _b64url(b"x" * (MIN_NONCE_SIZE - 1), pad=False), "16 to 64 random bytes"),
        ("nonce=AAAA", "got 3"),
        ("nonce=" + "A" * MAX_QUERY_LENGTH, "longer than"),
    ],
)
def test_bad_nonces_refused(query, message):
    with pytest.raises(InvalidNonceError, match=message):
        nonce_from_query(query)


def test_binary_nonce_bounds():
    assert (MIN_NONCE_SIZE, MAX_NONCE_SIZE) == (16, 64)
    for size in (MIN_NONCE_SIZE, 32, MAX_NONCE_SIZE):
        assert check_nonce(b"\x00" * size) == b"\x00" * size
    for size in (0, 1, 8, MIN_NONCE_SIZE - 1, MAX_NONCE_SIZE + 1):
        with pytest.raises(InvalidNonceError, match=f"got {size}; send a fresh 32-byte nonce"):
            check_nonce(b"\x00" * size)


def test_user_data_is_the_verify_label_not_atls():
    assert USER_DATA == VERIFY_USER_DATA_LABEL == b"constellation/verify/v1\x00"
    assert not USER_DATA.startswith(ATLS_USER_DATA_LABEL)
