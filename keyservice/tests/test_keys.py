"""Data-key derivation and the master secret's validation."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from constellation.keyservice.errors import ConfigError, InvalidRequestError
from constellation.keyservice.keys import MAX_DATA_KEY_LENGTH, DataKeys, MasterSecret


def _hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def test_data_key_is_hkdf_of_master_secret_with_key_prefix():
    keys = DataKeys(MasterSecret(key=b"k" * 32, salt=b"s" * 32))
    assert keys.derive("disk-1", 48) == _hkdf(b"k" * 32, b"s" * 32, b"key-disk-1", 48)
    assert keys.derive("disk-1", 32) != keys.derive("disk-2", 32)


@pytest.mark.parametrize(
    ("data_key_id", "length", "message"),
    [
        ("", 32, "must not be empty"),
        ("x", 0, "length must be"),
        ("x", MAX_DATA_KEY_LENGTH + 1, "length must be"),
        ("x" * 257, 32, "at most 256"),
    ],
)
def test_invalid_requests_rejected(data_key_id, length, message):
    keys = DataKeys(MasterSecret(key=b"k" * 16, salt=b"s" * 32))
    with pytest.raises(InvalidRequestError, match=message):
        keys.derive(data_key_id, length)


def test_largest_allowed_length_works():
    keys = DataKeys(MasterSecret(key=b"k" * 16, salt=b"s" * 32))
    assert len(keys.derive("x", MAX_DATA_KEY_LENGTH)) == MAX_DATA_KEY_LENGTH


@pytest.mark.parametrize(
    ("key", "salt", "message"),
    [(b"k" * 15, b"s" * 32, "master key"), (b"k" * 32, b"s" * 31, "master salt")],
)
def test_short_master_secret_refused(key, salt, message):
    with pytest.raises(ConfigError, match=message):
        MasterSecret(key=key, salt=salt)


def test_master_secret_never_printed():
    secret = MasterSecret(key=b"\xaa" * 32, salt=b"\xbb" * 32)
    for text in (repr(secret), str(secret), repr(DataKeys(secret))):
        assert "aa" not in text.lower()
        assert "\\xaa" not in text
        assert "redacted" in text
