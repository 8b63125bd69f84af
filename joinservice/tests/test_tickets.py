"""Request validation and identity rules of the ticket logic (pure parts)."""

from __future__ import annotations

import hashlib

import pytest

from constellation.attestation.evidence import VerifiedEvidence
from constellation.attestation.secret import SecretBytes
from constellation.joinservice.errors import InvalidRequestError, RefusedError
from constellation.joinservice.tickets import (
    MAX_CSR_SIZE,
    canonical_disk_uuid,
    check_csr_size,
    node_identity,
)


def test_disk_uuid_is_lowercased() -> None:
    assert (
        canonical_disk_uuid("6BA7B810-9DAD-11D1-80B4-00C04FD430C8")
        == "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "6ba7b810-9dad-11d1-80b4-00c04fd430c",
        "6ba7b8109dad11d180b400c04fd430c8",
        "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}",
        "6ba7b810-9dad-11d1-80b4-00c04fd430c8\n",
        "../../etc/passwd-9dad-11d1-80b4-00c04fd430c8",
        "g" * 8 + "-9dad-11d1-80b4-00c04fd430c8",
    ],
)
def test_disk_uuid_rejects(text: str) -> None:
    with pytest.raises(InvalidRequestError, match="disk_uuid"):
        canonical_disk_uuid(text)


def test_csr_size_limits() -> None:
    check_csr_size(b"x" * MAX_CSR_SIZE)
    with pytest.raises(InvalidRequestError, match="empty"):
        check_csr_size(b"")
    with pytest.raises(InvalidRequestError, match="limit"):
        check_csr_size(b"x" * (MAX_CSR_SIZE + 1))


def test_node_identity_is_sha256_of_ak() -> None:
    digest = hashlib.sha256(b"ak spki").hexdigest()
    evidence = VerifiedEvidence("qemu-vtpm", b"u", details={"ak_spki_sha256": digest})
    assert node_identity(evidence) == digest


@pytest.mark.parametrize(
    "details",
    [{}, {"ak_spki_sha256": ""}, {"ak_spki_sha256": "AB" * 32}, {"ak_spki_sha256": b"\x00" * 32}],
)
def test_node_identity_refuses_evidence_without_ak(details: dict[str, object]) -> None:
    with pytest.raises(RefusedError) as info:
        node_identity(VerifiedEvidence("qemu-vtpm", b"u", details=details))
    assert info.value.failures[0].check == "node_identity"


def test_secret_bytes_never_show() -> None:
    secret = SecretBytes(b"\x01" * 32)
    assert "01" not in repr(secret)
    assert "\\x01" not in str(secret)
    assert f"{secret}" == str(secret)
    assert secret == SecretBytes(b"\x01" * 32)
    assert secret != SecretBytes(b"\x02" * 32)
    with pytest.raises(TypeError):
        hash(secret)
