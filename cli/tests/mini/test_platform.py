"""Mini mode's platform CA: created once per workspace with its key private to the admin,
loaded again unchanged, refused with a typed error when its files are damaged, and certifying
exactly the AK that a node's swtpm holds, with the node's name and role."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from constellation.attestation.identity import Role
from constellation.attestation.identity.ca import PlatformCA
from constellation.attestation.identity.verify import verify_ak_certificate
from constellation.attestation.swtpm import Swtpm
from constellation.attestation.vtpm import ak_spki_der, provision_ak
from constellation.cli.mini.platform import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    CA_NAME,
    PlatformError,
    certify_node,
    load_or_create_platform_ca,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_ca_is_created_once_with_its_key_private(tmp_path: Path) -> None:
    directory = tmp_path / "mini" / "platform-ca"
    ca = load_or_create_platform_ca(directory)
    assert _mode(directory) == 0o700
    assert _mode(directory / CA_KEY_FILE) == 0o600
    assert (directory / CA_CERT_FILE).read_bytes() == ca.cert_pem
    assert CA_NAME in ca.certificate.subject.rfc4514_string()
    key_file = (directory / CA_KEY_FILE).read_bytes()
    assert ca.key_pem.reveal() == key_file

    again = load_or_create_platform_ca(directory)
    assert again.fingerprint == ca.fingerprint
    assert (directory / CA_KEY_FILE).read_bytes() == key_file  # not regenerated


def test_a_corrupt_key_file_is_a_typed_error(tmp_path: Path) -> None:
    directory = tmp_path / "platform-ca"
    load_or_create_platform_ca(directory)
    (directory / CA_KEY_FILE).write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n")
    with pytest.raises(PlatformError, match="cannot load the mini platform CA") as caught:
        load_or_create_platform_ca(directory)
    assert caught.value.hint
    assert "not a key" not in str(caught.value)  # key material is never echoed


def test_a_key_of_another_ca_is_a_typed_error(tmp_path: Path) -> None:
    directory = tmp_path / "platform-ca"
    load_or_create_platform_ca(directory)
    other = PlatformCA.generate("another platform CA")
    (directory / CA_KEY_FILE).write_bytes(other.key_pem.reveal())
    with pytest.raises(PlatformError):
        load_or_create_platform_ca(directory)


def test_a_half_present_ca_is_not_silently_replaced(tmp_path: Path) -> None:
    directory = tmp_path / "platform-ca"
    ca = load_or_create_platform_ca(directory)
    (directory / CA_KEY_FILE).unlink()
    with pytest.raises(PlatformError):
        load_or_create_platform_ca(directory)
    assert (directory / CA_CERT_FILE).read_bytes() == ca.cert_pem


@pytest.mark.swtpm
@pytest.mark.parametrize(
    ("name", "role"), [("mini-cp-0", Role.CONTROL_PLANE), ("mini-worker-1", Role.WORKER)]
)
def test_a_node_is_certified_with_its_own_ak_name_and_role(
    swtpm: Swtpm, tmp_path: Path, name: str, role: Role
) -> None:
    ca = load_or_create_platform_ca(tmp_path / "platform-ca")
    certificate = certify_node(swtpm.tcti, ca, name, role)
    ak = ak_spki_der(provision_ak(swtpm.tcti))  # the persisted AK, not a new one
    certified = x509.load_der_x509_certificate(certificate).public_key()
    assert certified == serialization.load_der_public_key(ak)
    identity, failures = verify_ak_certificate(
        certificate, ak_spki_der=ak, roots=(ca.certificate,), at=datetime.now(UTC)
    )
    assert failures == []
    assert identity is not None
    assert (identity.name, identity.role, identity.platform) == (name, role, ca.fingerprint)
    # Certifying again (a node restarted) certifies the same AK.
    again = x509.load_der_x509_certificate(certify_node(swtpm.tcti, ca, name, role))
    assert again.public_key() == certified


@pytest.mark.swtpm
def test_a_name_outside_the_profile_is_a_typed_error(swtpm: Swtpm, tmp_path: Path) -> None:
    ca = load_or_create_platform_ca(tmp_path / "platform-ca")
    with pytest.raises(PlatformError, match="Mini_CP"):
        certify_node(swtpm.tcti, ca, "Mini_CP", Role.CONTROL_PLANE)
