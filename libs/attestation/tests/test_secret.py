import copy
import pickle

import pytest

from constellation.attestation.secret import SecretBytes

KEY = bytes(range(32))


class DiskKeyLike(SecretBytes):
    __slots__ = ()


def test_reveal_returns_the_bytes_and_len_their_length() -> None:
    secret = SecretBytes(bytearray(KEY))
    assert secret.reveal() == KEY
    assert isinstance(secret.reveal(), bytes)
    assert len(secret) == 32


@pytest.mark.parametrize("render", [repr, str, lambda s: f"{s}", lambda s: f"{s!r}"])
def test_no_rendering_shows_the_bytes(render: object) -> None:
    assert callable(render)
    text = render(SecretBytes(KEY))
    assert text == "SecretBytes(<redacted 32 bytes>)"
    assert KEY.hex() not in text
    assert str(KEY) not in text


def test_a_subclass_names_itself_and_stays_redacted() -> None:
    assert repr(DiskKeyLike(KEY)) == "DiskKeyLike(<redacted 32 bytes>)"


def test_equality_compares_values_of_the_same_type_only() -> None:
    assert SecretBytes(KEY) == SecretBytes(KEY)
    assert SecretBytes(KEY) != SecretBytes(KEY[:-1] + b"\x00")
    assert SecretBytes(KEY) != KEY
    assert SecretBytes(KEY) != DiskKeyLike(KEY)


def test_hashing_is_refused() -> None:
    with pytest.raises(TypeError, match="not hashable"):
        hash(SecretBytes(KEY))
    with pytest.raises(TypeError):
        {SecretBytes(KEY)}


def test_pickling_and_copying_are_refused() -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(SecretBytes(KEY))
    with pytest.raises(TypeError):
        copy.deepcopy(SecretBytes(KEY))


def test_an_exception_message_built_from_a_secret_holds_no_key() -> None:
    error = ValueError(f"could not use {SecretBytes(KEY)}")
    assert KEY.hex() not in str(error)
