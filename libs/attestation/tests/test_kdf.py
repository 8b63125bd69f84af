"""HKDF-SHA256 against RFC 5869 Appendix A and the cluster formulas of DESIGN.md §3."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from constellation.attestation.kdf import (
    KeyDerivationError,
    derive_cluster_id,
    derive_key,
    derive_measurement_secret,
)

RFC5869_SHA256 = [
    (  # A.1: basic test case
        bytes([0x0B] * 22),
        bytes(range(0x00, 0x0D)),
        bytes(range(0xF0, 0xFA)),
        42,
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    ),
    (  # A.2: longer inputs and outputs
        bytes(range(0x00, 0x50)),
        bytes(range(0x60, 0xB0)),
        bytes(range(0xB0, 0x100)),
        82,
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
        "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
        "cc30c58179ec3e87c14c01d5c1f3434f1d87",
    ),
    (  # A.3: zero-length salt and info
        bytes([0x0B] * 22),
        b"",
        b"",
        42,
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
    ),
]


@pytest.mark.parametrize(("ikm", "salt", "info", "length", "okm"), RFC5869_SHA256)
def test_rfc5869_vectors(ikm: bytes, salt: bytes, info: bytes, length: int, okm: str) -> None:
    assert derive_key(ikm, salt, info, length).hex() == okm


def _hkdf_by_hand(secret: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(salt, secret, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def test_text_info_is_utf8() -> None:
    assert derive_key(b"k" * 32, b"s", "key-abc", 16) == derive_key(b"k" * 32, b"s", b"key-abc", 16)


def test_cluster_formulas() -> None:
    master_key, master_salt, measurement_salt = b"m" * 32, b"s" * 32, b"t" * 32
    secret = derive_measurement_secret(master_key, master_salt)
    assert secret == _hkdf_by_hand(master_key, master_salt, b"key-measurementSecret", 32)
    cluster_id = derive_cluster_id(secret, measurement_salt)
    assert cluster_id == _hkdf_by_hand(secret, measurement_salt, b"key-clusterID", 32)
    assert derive_cluster_id(secret, b"u" * 32) != cluster_id


@pytest.mark.parametrize("length", [0, -1, 255 * 32 + 1])
def test_impossible_lengths_are_rejected(length: int) -> None:
    with pytest.raises(KeyDerivationError, match="length"):
        derive_key(b"secret", b"salt", "info", length)


def test_empty_secret_is_rejected() -> None:
    with pytest.raises(KeyDerivationError, match="empty secret"):
        derive_key(b"", b"salt", "info", 32)
