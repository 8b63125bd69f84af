"""AK certificate verification: each check rejects on its own, all failures come together,
and hostile bytes never raise."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from types import ModuleType

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from constellation.attestation.errors import Failure
from constellation.attestation.identity import NodeIdentity, Role
from constellation.attestation.identity.ca import PlatformCA
from constellation.attestation.identity.errors import PlatformRootError
from constellation.attestation.identity.profile import NODE_ROLE_OID, encode_role
from constellation.attestation.identity.verify import (
    MAX_CERTIFICATE_SIZE,
    MAX_PLATFORM_ROOTS,
    load_platform_roots,
    platform_fingerprint,
    verify_ak_certificate,
)
from constellation.attestation.testing.certs import self_signed


def verify(
    forge: ModuleType,
    cert: bytes | None,
    ak: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    *roots: PlatformCA | x509.Certificate,
    at_offset: timedelta = timedelta(0),
) -> tuple[NodeIdentity | None, list[Failure]]:
    certificates = [r.certificate if isinstance(r, PlatformCA) else r for r in roots]
    return verify_ak_certificate(
        cert, ak_spki_der=forge.spki(ak), roots=certificates, at=forge.NOW + at_offset
    )


def rejected(result: tuple[NodeIdentity | None, list[Failure]]) -> set[str]:
    identity, failures = result
    assert identity is None
    assert failures, "a rejection names its failures"
    for failure in failures:
        assert failure.enforced
        assert failure.expected
        assert failure.actual
    return {f.check for f in failures}


# --- acceptance ------------------------------------------------------------------------------
def test_genuine_certificate_gives_the_identity(
    forge: ModuleType,
    platform: PlatformCA,
    other_platform: PlatformCA,
    ak: ec.EllipticCurvePrivateKey,
) -> None:
    cert = forge.ak_certificate(platform, ak, names=("cp-1",), role=encode_role(Role.CONTROL_PLANE))
    identity, failures = verify(forge, cert, ak, other_platform, platform)
    assert failures == []
    assert identity == NodeIdentity(
        name="cp-1",
        role=Role.CONTROL_PLANE,
        ak_sha256=hashlib.sha256(forge.spki(ak)).hexdigest(),
        platform=platform_fingerprint(platform.certificate),
    )


def test_rsa_ak_under_an_rsa_root(forge: ModuleType) -> None:
    """RSA PKCS#1 v1.5 signatures by an RSA platform root, for an RSA AK."""
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = PlatformCA.from_pem(
        _self_signed(root_key),
        root_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    ak = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    identity, failures = verify(forge, forge.ak_certificate(root, ak), ak, root)
    assert failures == []
    assert identity is not None
    assert identity.role is Role.WORKER


def _self_signed(key: rsa.RSAPrivateKey) -> bytes:
    from datetime import UTC, datetime

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rsa platform")])
    start = datetime(2029, 1, 1, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_naive_time_is_taken_as_utc(
    forge: ModuleType, platform: PlatformCA, ak: ec.EllipticCurvePrivateKey
) -> None:
    identity, failures = verify_ak_certificate(
        forge.ak_certificate(platform, ak),
        ak_spki_der=forge.spki(ak),
        roots=[platform.certificate],
        at=forge.NOW.replace(tzinfo=None),
    )
    assert failures == []
    assert identity is not None


# --- ak.certificate --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cert",
    [
        None,
        b"",
        b"\x30\x00",
        b"not a certificate",
        b"\x30" + b"\x82\x40\x00" + bytes(MAX_CERTIFICATE_SIZE),
    ],
)
def test_absent_or_unparsable_certificate(
    forge: ModuleType, platform: PlatformCA, ak: ec.EllipticCurvePrivateKey, cert: bytes | None
) -> None:
    assert rejected(verify(forge, cert, ak, platform)) == {"ak.certificate"}


def test_truncated_certificate(
    forge: ModuleType, platform: PlatformCA, ak: ec.EllipticCurvePrivateKey
) -> None:
    cert = forge.ak_certificate(platform, ak)
    for size in (1, 10, len(cert) // 2, len(cert) - 1):
        assert rejected(verify(forge, cert[:size], ak, platform)) == {"ak.certificate"}


def test_version_1_certificate(
    forge: ModuleType, platform: PlatformCA, ak: ec.EllipticCurvePrivateKey
) -> None:
    cert = forge.resign(
        forge.ak_certificate(platform, ak),
        forge.ca_key_of(platform),
        lambda tbs: [e for e in tbs if e[0] not in (0xA0, 0xA3)],  # no version, no extensions
    )
    assert x509.load_der_x509_certificate(cert).version is x509.Version.v1
    identity, failures = verify(forge, cert, ak, platform)
    assert identity is None
    assert [f.check for f in failures] == ["ak.certificate"]
    assert "v1" in failures[0].actual


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
def test_non_positive_serial_number(
    forge: ModuleType, platform: PlatformCA, ak: ec.EllipticCurvePrivateKey
) -> None:
    cert = forge.resign(
        forge.ak_certificate(platform, ak),
        forge.ca_key_of(platform),
        lambda tbs: [tbs[0], b"\x02\x01\x00", *tbs[2:]],  # version, serial 0, ...
    )
    identity, failures = verify(forge, cert, ak, platform)
    assert identity is None
    assert [f.check for f in failures] == ["ak.certificate"]
    assert "serial" in failures[0].actual


def test_duplicated_extension_is_a_failure_not_an_exception(
    forge: ModuleType, platform: PlatformCA, ak: ec.EllipticCurvePrivateKey
) -> None:
    # Two role extensions: one under a placeholder OID of the same encoded length, which is
    # then renamed to the role OID in the DER, and the whole re-signed by the platform.
    placeholder = x509.ObjectIdentifier("1.3.9900.5.2.9")
    cert = forge.ak_certificate(
        platform,
        ak,
        extra=((x509.UnrecognizedExtension(placeholder, encode_role(Role.CONTROL_PLANE)), False),),
    )

    encoded = b"\x06\x06\x2b\xcd\x2c\x05\x02"  # OBJECT IDENTIFIER 1.3.9900.5.2.x
    assert encoded + b"\x09" in cert

    def rename(tbs: list[bytes]) -> list[bytes]:
        return [e.replace(encoded + b"\x09", encoded + b"\x01") for e in tbs]

    duplicated = forge.resign(cert, forge.ca_key_of(platform), rename)
    assert encoded + b"\x09" not in duplicated
    with pytest.raises(x509.DuplicateExtension):
        _ = x509.load_der_x509_certificate(duplicated).extensions
    assert rejected(verify(forge, duplicated, ak, platform)) == {"ak.certificate"}


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
def test_every_single_bit_flip_is_rejected_without_raising(
    forge: ModuleType, platform: PlatformCA, ak: ec.EllipticCurvePrivateKey
) -> None:
    cert = forge.ak_certificate(platform, ak)
    for position in range(len(cert)):
        for bit in (0x01, 0x80):
            mutated = bytearray(cert)
            mutated[position] ^= bit
            identity, failures = verify(forge, bytes(mutated), ak, platform)
            assert identity is None, f"flip at {position} accepted"
            assert failures


# --- ak.certificate.chain --------------------------------------------------------------------
def test_certificate_from_another_ca_with_the_same_name(
    forge: ModuleType,
    platform: PlatformCA,
    other_platform: PlatformCA,
    ak: ec.EllipticCurvePrivateKey,
) -> None:
    assert other_platform.certificate.subject == platform.certificate.subject
    cert = forge.ak_certificate(other_platform, ak)
    assert rejected(verify(forge, cert, ak, platform)) == {"ak.certificate.chain"}
    assert verify(forge, cert, ak, other_platform)[1] == []


def test_no_roots(forge: ModuleType, platform: PlatformCA, ak: ec.EllipticCurvePrivateKey) -> None:
    identity, failures = verify(forge, forge.ak_certificate(platform, ak), ak)
    assert identity is None
    assert [(f.check, f.actual) for f in failures] == [
        ("ak.certificate.chain", "no platform roots configured")
    ]


def test_issuer_name_must_match_the_root(
    forge: ModuleType, platform: PlatformCA, ak: ec.EllipticCurvePrivateKey
) -> None:
    other_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "elsewhere")])
    cert = forge.ak_certificate(platform, ak, issuer=other_name)
    assert rejected(verify(forge, cert, ak, platform)) == {"ak.certificate.chain"}


def test_a_root_that_is_not_a_ca_does_not_count(
    forge: ModuleType, platform: PlatformCA, ak: ec.EllipticCurvePrivateKey
) -> None:
    """A leaf whose subject equals the issuer and whose key signed the certificate is no root."""
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_der = forge.ak_certificate(platform, leaf_key, names=("platform",))
    leaf = x509.load_der_x509_certificate(leaf_der)
    cert = forge.ak_certificate(platform, ak, issuer=leaf.subject, signer=leaf_key)
    assert rejected(verify(forge, cert, ak, leaf)) == {"ak.certificate.chain"}


def test_rsa_pss_and_ed25519_signatures_are_not_allowed(
    forge: ModuleType, ak: ec.EllipticCurvePrivateKey
) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_root = x509.load_pem_x509_certificate(_self_signed(rsa_key))
    from datetime import UTC, datetime

    start = datetime(2029, 1, 1, tzinfo=UTC)
    tbs = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "worker-0")]))
        .issuer_name(rsa_root.subject)
        .public_key(ak.public_key())
        .serial_number(7)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=3650))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(NODE_ROLE_OID, encode_role(Role.WORKER)), critical=False
        )
    )
    pss = tbs.sign(
        rsa_key,
        hashes.SHA256(),
        rsa_padding=padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
    ).public_bytes(serialization.Encoding.DER)
    identity, failures = verify(forge, pss, ak, rsa_root)
    assert identity is None
    chain = [f for f in failures if f.check == "ak.certificate.chain"]
    assert chain
    assert "not allowed" in chain[0].actual

    ed_key = ed25519.Ed25519PrivateKey.generate()
    ed_root_cert = (
        x509.CertificateBuilder()
        .subject_name(rsa_root.subject)
        .issuer_name(rsa_root.subject)
        .public_key(ed_key.public_key())
        .serial_number(8)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ed_key, None)
    )
    ed_signed = tbs.sign(ed_key, None).public_bytes(serialization.Encoding.DER)
    assert "ak.certificate.chain" in rejected(verify(forge, ed_signed, ak, ed_root_cert))


# --- ak.certificate.validity -----------------------------------------------------------------
def test_expired_and_not_yet_valid(
    forge: ModuleType, platform: PlatformCA, ak: ec.EllipticCurvePrivateKey
) -> None:
    expired = forge.ak_certificate(
        platform,
        ak,
        not_before=forge.NOW - timedelta(days=10),
        not_after=forge.NOW - timedelta(seconds=1),
    )
    assert rejected(verify(forge, expired, ak, platform)) == {"ak.certificate.validity"}
    future = forge.ak_certificate(platform, ak, not_before=forge.NOW + timedelta(hours=1))
    assert rejected(verify(forge, future, ak, platform)) == {"ak.certificate.validity"}


def test_expired_root(forge: ModuleType, ak: ec.EllipticCurvePrivateKey) -> None:
    short = PlatformCA.generate(
        "short-lived platform",
        not_before=forge.NOW - timedelta(days=30),
        validity=timedelta(days=10),
    )
    cert = forge.ak_certificate(short, ak, not_after=forge.NOW + timedelta(days=100))
    identity, failures = verify(forge, cert, ak, short)
    assert identity is None
    assert [(f.check, "platform root" in f.expected) for f in failures] == [
        ("ak.certificate.validity", True)
    ]


# --- ak.certificate.key ----------------------------------------------------------------------
def test_genuine_certificate_of_another_ak(
    forge: ModuleType, platform: PlatformCA, ak: ec.EllipticCurvePrivateKey
) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    cert = forge.ak_certificate(platform, other)
    identity, failures = verify(forge, cert, ak, platform)
    assert identity is None
    assert [f.check for f in failures] == ["ak.certificate.key"]
    assert hashlib.sha256(forge.spki(ak)).hexdigest()[:16] in failures[0].expected
    assert hashlib.sha256(forge.spki(other)).hexdigest()[:16] in failures[0].actual


def test_compressed_point_spki_is_the_same_key(
    forge: ModuleType, platform: PlatformCA, ak: ec.EllipticCurvePrivateKey
) -> None:
    cert = forge.ak_certificate(platform, ak)
    compressed = ak.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    algorithm = forge.elements(forge.spki(ak))[0]
    compressed_spki = forge.tlv(0x30, algorithm + forge.tlv(0x03, b"\x00" + compressed))
    assert compressed_spki != forge.spki(ak)
    assert serialization.load_der_public_key(compressed_spki) == ak.public_key()
    identity, failures = verify_ak_certificate(
        cert, ak_spki_der=compressed_spki, roots=[platform.certificate], at=forge.NOW
    )
    assert failures == []
    assert identity is not None


# --- ak.certificate.usage --------------------------------------------------------------------
@pytest.mark.parametrize(
    "changes",
    [
        {"eku": None},
        {"eku": (ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH)},
        {"ca_flag": True},
        {"usage": "keyCertSign"},
        {"usage": "keyAgreementOnly"},
        {"extra": "critical-unknown"},
    ],
    ids=[
        "no-eku",
        "other-eku",
        "ca-true",
        "key-cert-sign",
        "no-digital-signature",
        "unknown-critical",
    ],
)
def test_usage_violations(
    forge: ModuleType,
    platform: PlatformCA,
    ak: ec.EllipticCurvePrivateKey,
    changes: dict[str, object],
) -> None:
    if changes.get("usage") == "keyCertSign":
        changes = {"usage": forge.key_usage(key_cert_sign=True)}
    elif changes.get("usage") == "keyAgreementOnly":
        changes = {"usage": forge.key_usage(digital_signature=False)}
    elif changes.get("extra") == "critical-unknown":
        unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.9900.99.1"), b"\x05\x00")
        changes = {"extra": ((unknown, True),)}
    cert = forge.ak_certificate(platform, ak, **changes)
    assert rejected(verify(forge, cert, ak, platform)) == {"ak.certificate.usage"}


def test_basic_constraints_may_be_absent(
    forge: ModuleType, platform: PlatformCA, ak: ec.EllipticCurvePrivateKey
) -> None:
    identity, failures = verify(
        forge, forge.ak_certificate(platform, ak, ca_flag=None), ak, platform
    )
    assert failures == []
    assert identity is not None


# --- ak.certificate.identity -----------------------------------------------------------------
@pytest.mark.parametrize(
    "changes",
    [
        {"names": ()},
        {"names": ("worker-0", "worker-1")},
        {"names": ("Worker-0",)},
        {"names": ("worker-0.example.com",)},
        {"names": ("a" * 64,)},
        {"role": None},
        {"role": b"\x0c\x05admin"},
        {"role": b"\x13\x06worker"},
        {"role": b""},
    ],
    ids=[
        "no-cn",
        "two-cns",
        "uppercase",
        "dotted",
        "too-long",
        "no-role",
        "unknown-role",
        "printable-string",
        "empty-role",
    ],
)
def test_identity_violations(
    forge: ModuleType,
    platform: PlatformCA,
    ak: ec.EllipticCurvePrivateKey,
    changes: dict[str, object],
) -> None:
    cert = forge.ak_certificate(platform, ak, **changes)
    assert rejected(verify(forge, cert, ak, platform)) == {"ak.certificate.identity"}


# --- all together ----------------------------------------------------------------------------
def test_every_failure_is_reported_at_once(
    forge: ModuleType,
    platform: PlatformCA,
    other_platform: PlatformCA,
    ak: ec.EllipticCurvePrivateKey,
) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    cert = forge.ak_certificate(
        other_platform,
        other,
        names=("Bad Name",),
        role=None,
        eku=None,
        ca_flag=True,
        not_after=forge.NOW - timedelta(days=1),
    )
    identity, failures = verify(forge, cert, ak, platform)
    assert identity is None
    assert {f.check for f in failures} == {
        "ak.certificate.chain",
        "ak.certificate.validity",
        "ak.certificate.key",
        "ak.certificate.usage",
        "ak.certificate.identity",
    }
    assert len([f for f in failures if f.check == "ak.certificate.usage"]) == 2
    assert len([f for f in failures if f.check == "ak.certificate.identity"]) == 2
    assert all(f.detail for f in failures), "every failure says what to do"


# --- load_platform_roots ---------------------------------------------------------------------
def test_roots_load_and_deduplicate(platform: PlatformCA, other_platform: PlatformCA) -> None:
    bundle = platform.cert_pem + b"\n" + other_platform.cert_pem + platform.cert_pem
    assert load_platform_roots(bundle) == (platform.certificate, other_platform.certificate)


@pytest.mark.parametrize(
    ("bundle", "message"),
    [
        (b"", "no certificates"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "no certificates"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "does not parse"),
        (b"x" * (2 << 20), "exceeds"),
    ],
)
def test_unusable_root_bundles(bundle: bytes, message: str) -> None:
    with pytest.raises(PlatformRootError, match=message) as refused:
        load_platform_roots(bundle)
    assert "AAAA" not in str(refused.value)


def test_too_many_roots() -> None:
    bundle = b"".join(PlatformCA.generate(f"p{i}").cert_pem for i in range(MAX_PLATFORM_ROOTS + 1))
    with pytest.raises(PlatformRootError, match="at most 16"):
        load_platform_roots(bundle)


def test_a_leaf_is_not_a_root(
    forge: ModuleType, platform: PlatformCA, ak: ec.EllipticCurvePrivateKey
) -> None:
    leaf = x509.load_der_x509_certificate(forge.ak_certificate(platform, ak))
    with pytest.raises(PlatformRootError, match="not a CA"):
        load_platform_roots(platform.cert_pem + leaf.public_bytes(serialization.Encoding.PEM))


def test_a_ca_without_key_cert_sign_is_not_a_root(forge: ModuleType) -> None:
    cert = self_signed(
        ec.generate_private_key(ec.SECP256R1()),
        "signs nothing",
        not_before=forge.NOW,
        extensions=[(forge.key_usage(), True)],
    )
    with pytest.raises(PlatformRootError, match="not a CA"):
        load_platform_roots(cert.public_bytes(serialization.Encoding.PEM))


def test_an_ed25519_root_is_refused(forge: ModuleType) -> None:
    cert = self_signed(ed25519.Ed25519PrivateKey.generate(), "edwards", not_before=forge.NOW)
    with pytest.raises(PlatformRootError, match="cannot verify"):
        load_platform_roots(cert.public_bytes(serialization.Encoding.PEM))


def test_a_second_encoding_of_a_genuine_certificate_is_refused(
    forge: ModuleType, platform: PlatformCA, ak: ec.EllipticCurvePrivateKey
) -> None:
    """One unused bit declared in the signature BIT STRING: the signature still verifies over
    the unchanged TBS part, but DER allows one encoding per certificate."""
    cert = forge.ak_certificate(platform, ak)
    # The certificate ends with the BIT STRING's content: the unused-bits byte, the signature.
    unused = len(cert) - len(x509.load_der_x509_certificate(cert).signature) - 1
    assert cert[unused] == 0
    malleated = cert[:unused] + b"\x01" + cert[unused + 1 :]
    identity, failures = verify(forge, malleated, ak, platform)
    assert identity is None
    assert {f.check for f in failures} == {"ak.certificate"}
    # cryptography itself refuses it when the signature's last bit is set (that bit would have
    # to be an unused zero); otherwise the profile's own DER check does.
    assert failures[0].actual in {
        "a signature BIT STRING with unused bits",
        "unparsable (ValueError)",
    }
