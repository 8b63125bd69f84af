"""The platform CA: what it issues follows the profile, and its key never shows itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import ModuleType

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from constellation.attestation.identity import Role
from constellation.attestation.identity.ca import PlatformCA
from constellation.attestation.identity.errors import InvalidIdentityError, PlatformCAError
from constellation.attestation.identity.profile import (
    AK_CERTIFICATE_EKU,
    NODE_ROLE_OID,
    PLATFORM_ORGANIZATION,
    decode_role,
)
from constellation.attestation.identity.verify import load_platform_roots, verify_ak_certificate
from constellation.attestation.secret import SecretBytes


def test_generated_ca_is_a_ten_year_p256_root(platform: PlatformCA) -> None:
    cert = platform.certificate
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(cert.public_key().curve, ec.SECP256R1)  # type: ignore[union-attr]
    assert cert.issuer == cert.subject
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == timedelta(days=3650)
    assert load_platform_roots(platform.cert_pem) == (cert,)


def test_issued_certificate_follows_the_profile(
    platform: PlatformCA, forge: ModuleType, ak: ec.EllipticCurvePrivateKey
) -> None:
    der = platform.issue_ak_certificate(forge.spki(ak), "control-plane-0", Role.CONTROL_PLANE)
    cert = x509.load_der_x509_certificate(der)
    assert cert.version is x509.Version.v3
    assert cert.issuer == platform.certificate.subject
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    org = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    assert [a.value for a in cn] == ["control-plane-0"]
    assert [a.value for a in org] == [PLATFORM_ORGANIZATION]
    extensions = cert.extensions
    assert not extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert not usage.key_cert_sign
    assert list(extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        AK_CERTIFICATE_EKU
    ]
    role = extensions.get_extension_for_oid(NODE_ROLE_OID)
    assert not role.critical
    assert decode_role(role.value.value) is Role.CONTROL_PLANE  # type: ignore[attr-defined]
    assert cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == forge.spki(ak)


def test_issued_certificate_verifies(platform: PlatformCA, forge: ModuleType) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = platform.issue_ak_certificate(
        forge.spki(key), "worker-3", Role.WORKER, not_before=forge.NOW - timedelta(days=1)
    )
    identity, failures = verify_ak_certificate(
        der, ak_spki_der=forge.spki(key), roots=[platform.certificate], at=forge.NOW
    )
    assert failures == []
    assert identity is not None
    assert (identity.name, identity.role) == ("worker-3", Role.WORKER)


def test_issued_certificate_starts_now_minus_skew_and_lasts_ten_years(
    platform: PlatformCA, forge: ModuleType, ak: ec.EllipticCurvePrivateKey
) -> None:
    before = datetime.now(UTC)
    cert = x509.load_der_x509_certificate(
        platform.issue_ak_certificate(forge.spki(ak), "worker-0", Role.WORKER)
    )
    assert cert.not_valid_before_utc <= before
    assert cert.not_valid_before_utc >= before - timedelta(minutes=6)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=3650)


@pytest.mark.parametrize("name", ["", "Worker-0", "a" * 64, "node.example"])
def test_names_outside_the_profile_are_refused(
    platform: PlatformCA, forge: ModuleType, ak: ec.EllipticCurvePrivateKey, name: str
) -> None:
    with pytest.raises(InvalidIdentityError):
        platform.issue_ak_certificate(forge.spki(ak), name, Role.WORKER)


def test_unknown_role_is_refused(
    platform: PlatformCA, forge: ModuleType, ak: ec.EllipticCurvePrivateKey
) -> None:
    with pytest.raises(ValueError, match="admin"):
        platform.issue_ak_certificate(forge.spki(ak), "worker-0", "admin")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "make_key",
    [
        lambda: ec.generate_private_key(ec.SECP384R1()),
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024),  # noqa: S505 (the weak key under test)
        ed25519.Ed25519PrivateKey.generate,
    ],
)
def test_keys_the_profile_cannot_carry_are_refused(platform: PlatformCA, make_key: object) -> None:
    key = make_key()  # type: ignore[operator]
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(PlatformCAError, match="cannot certify"):
        platform.issue_ak_certificate(spki, "worker-0", Role.WORKER)


def test_garbage_ak_key_is_refused(platform: PlatformCA) -> None:
    with pytest.raises(PlatformCAError, match="SubjectPublicKeyInfo"):
        platform.issue_ak_certificate(b"\x30\x03\x02\x01\x00", "worker-0", Role.WORKER)


def test_pem_round_trip_and_redacted_key(platform: PlatformCA, forge: ModuleType) -> None:
    key_pem = platform.key_pem
    assert isinstance(key_pem, SecretBytes)
    assert "PRIVATE" not in repr(key_pem)
    assert "PRIVATE" not in repr(platform)
    loaded = PlatformCA.from_pem(platform.cert_pem, key_pem)
    assert loaded.certificate == platform.certificate
    assert loaded.fingerprint == platform.fingerprint
    # Certificates of the loaded CA chain to the original root.
    ak = ec.generate_private_key(ec.SECP256R1())
    der = loaded.issue_ak_certificate(forge.spki(ak), "worker-0", Role.WORKER, not_before=forge.NOW)
    identity, failures = verify_ak_certificate(
        der, ak_spki_der=forge.spki(ak), roots=[platform.certificate], at=forge.NOW
    )
    assert failures == []
    assert identity is not None
    assert identity.platform == platform.fingerprint
    assert PlatformCA.from_pem(platform.cert_pem, key_pem.reveal()).certificate == (
        platform.certificate
    )


def test_from_pem_refuses_a_key_of_another_ca(
    platform: PlatformCA, other_platform: PlatformCA
) -> None:
    with pytest.raises(PlatformCAError, match="does not belong"):
        PlatformCA.from_pem(platform.cert_pem, other_platform.key_pem)


def test_from_pem_refuses_garbage(platform: PlatformCA) -> None:
    with pytest.raises(PlatformCAError, match="certificate"):
        PlatformCA.from_pem(b"not a certificate", platform.key_pem)
    with pytest.raises(PlatformCAError, match="private key"):
        PlatformCA.from_pem(platform.cert_pem, b"not a key")
    secret = (
        b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0IGtleSBtYXRlcmlhbA==\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(PlatformCAError) as refused:
        PlatformCA.from_pem(platform.cert_pem, secret)
    assert "c2VjcmV0" not in str(refused.value)


def test_from_pem_refuses_a_certificate_that_is_not_a_ca(
    platform: PlatformCA, forge: ModuleType
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = x509.load_der_x509_certificate(
        platform.issue_ak_certificate(forge.spki(key), "worker-0", Role.WORKER)
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(PlatformCAError, match="not a CA"):
        PlatformCA.from_pem(leaf.public_bytes(serialization.Encoding.PEM), key_pem)
