"""The AK certificate profile: instance names and the role extension's encoding."""

from __future__ import annotations

import pytest

from constellation.attestation.errors import AttestationError
from constellation.attestation.identity import Role
from constellation.attestation.identity.errors import IdentityError, InvalidIdentityError
from constellation.attestation.identity.profile import (
    check_instance_name,
    decode_role,
    encode_role,
    is_instance_name,
)


@pytest.mark.parametrize("name", ["a", "0", "worker-0", "control-plane-12", "a" * 63, "a-b-c"])
def test_instance_names_that_fit(name: str) -> None:
    assert is_instance_name(name)
    assert check_instance_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "a" * 64, "Worker", "-a", "a-", "a_b", "a.b", "a b", "worker\n", "wörker", "a/../b"],
)
def test_instance_names_that_do_not_fit(name: str) -> None:
    assert not is_instance_name(name)
    with pytest.raises(InvalidIdentityError, match="DNS label"):
        check_instance_name(name)


@pytest.mark.parametrize("role", list(Role))
def test_role_round_trip(role: Role) -> None:
    encoded = encode_role(role)
    assert encoded[0] == 0x0C  # DER UTF8String
    assert encoded[1] == len(role.value)
    assert decode_role(encoded) is role


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\x0c",
        b"\x13\x06worker",  # PrintableString, not UTF8String
        b"\x0c\x07worker",  # length beyond the value
        b"\x0c\x06worker\x00",  # trailing byte
        b"\x0c\x81\x06worker",  # long-form length for a short value
        b"\x0c\x05admin",  # not a role
        b"\x0c\x06WORKER",
        b"\x0c\x02\xff\xfe",  # not UTF-8
    ],
)
def test_role_values_that_are_refused(value: bytes) -> None:
    with pytest.raises(InvalidIdentityError, match="role extension"):
        decode_role(value)


def test_errors_are_typed() -> None:
    assert issubclass(InvalidIdentityError, IdentityError)
    assert issubclass(IdentityError, AttestationError)
