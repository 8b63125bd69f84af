from __future__ import annotations

import pytest

from constellation.bootstrapper.errors import (
    BootstrapperError,
    InitSecretHashError,
    InitSecretMismatchError,
)
from constellation.bootstrapper.initsecret import (
    InitSecret,
    check_init_secret,
    hash_init_secret,
)

# The minimum bcrypt cost keeps the tests fast; the cost is stored in the hash itself.
COST = 4


@pytest.fixture(scope="module")
def secret() -> InitSecret:
    return InitSecret.generate()


@pytest.fixture(scope="module")
def secret_hash(secret: InitSecret) -> bytes:
    return hash_init_secret(secret, cost=COST)


def test_right_secret_is_accepted(secret: InitSecret, secret_hash: bytes) -> None:
    check_init_secret(secret, secret_hash)
    check_init_secret(secret.reveal(), secret_hash)


def test_wrong_secret_is_rejected_without_revealing_it(
    secret: InitSecret, secret_hash: bytes
) -> None:
    wrong = InitSecret(bytes(b ^ 0x01 for b in secret.reveal()))
    with pytest.raises(InitSecretMismatchError) as info:
        check_init_secret(wrong, secret_hash)
    message = str(info.value)
    assert wrong.reveal().hex() not in message
    assert secret.reveal().hex() not in message
    assert secret_hash.decode() not in message


def test_prefix_of_secret_is_rejected(secret: InitSecret, secret_hash: bytes) -> None:
    with pytest.raises(InitSecretMismatchError):
        check_init_secret(secret.reveal()[:-1], secret_hash)


@pytest.mark.parametrize(
    "garbage",
    [b"", b"not a hash", b"$2b$04$tooshort", b"$9z$04$" + b"a" * 53],
)
def test_garbage_hash_is_a_typed_error(secret: InitSecret, garbage: bytes) -> None:
    with pytest.raises(InitSecretHashError, match="not a valid bcrypt hash"):
        check_init_secret(secret, garbage)


@pytest.mark.parametrize("length", [0, 73])
def test_secret_length_outside_bcrypt_range_is_refused(secret_hash: bytes, length: int) -> None:
    with pytest.raises(BootstrapperError, match="1 to 72 bytes"):
        check_init_secret(b"x" * length, secret_hash)


def test_repr_is_redacted(secret: InitSecret) -> None:
    assert secret.reveal().hex() not in repr(secret)
    assert "redacted" in str(secret)
