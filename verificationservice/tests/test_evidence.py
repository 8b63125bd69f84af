"""Nonce rules of the VerificationService (shared by gRPC and HTTP)."""

from __future__ import annotations

import base64

import pytest

from constellation.verificationservice.errors import InvalidNonceError
from constellation.verificationservice.evidence import (
    MAX_NONCE_SIZE,
    MAX_QUERY_LENGTH,
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
    assert nonce_from_query("nonce=-_-_") == base64.urlsafe_b64decode("-_-_")


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
        ("nonce=" + _b64url(b"x" * (MAX_NONCE_SIZE + 1), pad=False), "at most"),
        ("nonce=" + "A" * MAX_QUERY_LENGTH, "longer than"),
    ],
)
def test_bad_nonces_refused(query, message):
    with pytest.raises(InvalidNonceError, match=message):
        nonce_from_query(query)


def test_binary_nonce_bounds():
    assert check_nonce(b"\x00") == b"\x00"
    with pytest.raises(InvalidNonceError):
        check_nonce(b"")
    with pytest.raises(InvalidNonceError):
        check_nonce(b"\x00" * (MAX_NONCE_SIZE + 1))
