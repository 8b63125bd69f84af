"""Kubelet CSR signing: every rule has a case where it must refuse.

The end-to-end proof (the API server accepts the issued certificate as system:node:<name>)
lives in ``test_kubelet_cert_kube.py``; these tests pin the rules themselves.
"""

from __future__ import annotations

import base64
import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from constellation.attestation.testing.certs import self_signed
from constellation.joinservice.errors import ConfigError, InvalidRequestError, RefusedError
from constellation.joinservice.kubelet_cert import (
    MAX_VALIDITY,
    CSRNodeNameError,
    CSRRejectedError,
    KubeletCertSigner,
    MalformedCSRError,
    SigningCA,
    SigningCAError,
    sign_kubelet_csr,
)
from constellation.joinservice.tickets import MAX_CSR_SIZE, KubeletSigner

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
NODE = "worker-1"
UNSPECIFIED = "0.0.0.0"  # noqa: S104 - a SAN value that must be refused, nothing binds to it


def weak_rsa_key() -> rsa.RSAPrivateKey:
    """A 1024-bit key: exactly what the signer must refuse."""
    return rsa.generate_private_key(65537, 1024)  # noqa: S505


def make_ca(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
    *,
    is_ca: bool = True,
    not_before: datetime = NOW - timedelta(days=1),
    not_after: datetime = NOW + timedelta(days=3650),
) -> tuple[bytes, bytes]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    cert = self_signed(key, "kubernetes", ca=is_ca, not_before=not_before, not_after=not_after)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture(scope="module")
def ca() -> SigningCA:
    return SigningCA.from_pem(*make_ca())


def make_csr(
    *,
    attributes: list[tuple[x509.ObjectIdentifier, str]] | None = None,
    rdns: list[x509.RelativeDistinguishedName] | None = None,
    sans: list[x509.GeneralName] | None = None,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
) -> bytes:
    if attributes is None:
        attributes = [
            (NameOID.ORGANIZATION_NAME, "system:nodes"),
            (NameOID.COMMON_NAME, "system:node:worker-1"),
        ]
    subject = (
        x509.Name(rdns)
        if rdns is not None
        else x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])
    )
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans is None:
        sans = [x509.IPAddress(ipaddress.ip_address("10.0.0.7"))]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    key = key or ec.generate_private_key(ec.SECP256R1())
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def checks_of(err: CSRRejectedError) -> set[str]:
    return {f.check for f in err.failures}


def test_signs_a_valid_csr_as_the_node(ca: SigningCA) -> None:
    signed = sign_kubelet_csr(make_csr(), ca, node_name=NODE, now=NOW)
    cert = x509.load_pem_x509_certificate(signed.cert_pem)
    assert signed.node_name == "worker-1"
    assert cert.subject.rfc4514_string() == "CN=system:node:worker-1,O=system:nodes"
    assert cert.issuer == ca.certificate.subject
    ca_public = ca.certificate.public_key()
    assert isinstance(ca_public, ec.EllipticCurvePublicKey)
    ca_public.verify(
        cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256())
    )  # raises if not signed by the CA
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]
    assert cert.not_valid_after_utc == NOW + timedelta(days=365)
    assert cert.not_valid_before_utc <= NOW


def test_validity_never_exceeds_the_ca(ca: SigningCA) -> None:
    short_ca = SigningCA.from_pem(*make_ca(not_after=NOW + timedelta(days=10)))
    cert = x509.load_pem_x509_certificate(
        sign_kubelet_csr(make_csr(), short_ca, node_name=NODE, now=NOW).cert_pem
    )
    assert cert.not_valid_after_utc == NOW + timedelta(days=10)


def test_signer_uses_its_clock(ca: SigningCA) -> None:
    signer: KubeletSigner = KubeletCertSigner(ca, clock=lambda: NOW, validity=timedelta(hours=1))
    cert = x509.load_pem_x509_certificate(signer.sign(make_csr(), node_name=NODE).cert_pem)
    assert cert.not_valid_after_utc == NOW + timedelta(hours=1)


@pytest.mark.parametrize(
    "csr_pem",
    [b"", b"-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n-----END CERTIFICATE REQUEST-----\n"],
)
def test_malformed_csr_is_refused(ca: SigningCA, csr_pem: bytes) -> None:
    with pytest.raises(MalformedCSRError):
        sign_kubelet_csr(csr_pem, ca, node_name=NODE, now=NOW)


def test_oversized_csr_is_refused_unparsed(ca: SigningCA) -> None:
    with pytest.raises(MalformedCSRError, match="limit"):
        sign_kubelet_csr(b"A" * (MAX_CSR_SIZE + 1), ca, node_name=NODE, now=NOW)


def test_tampered_csr_signature_is_refused(ca: SigningCA) -> None:
    csr = x509.load_pem_x509_csr(make_csr())
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    at = der.find(b"worker-1")
    der[at : at + 8] = b"worker-2"  # same length: still parses, signature no longer matches
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CSRRejectedError) as err:
        sign_kubelet_csr(tampered, ca, node_name=NODE, now=NOW)
    assert checks_of(err.value) == {"csr.signature"}


@pytest.mark.parametrize(
    ("attributes", "check"),
    [
        (
            [(NameOID.ORGANIZATION_NAME, "system:masters"), (NameOID.COMMON_NAME, "system:node:a")],
            "csr.subject.organization",
        ),
        ([(NameOID.COMMON_NAME, "system:node:a")], "csr.subject.organization"),
        (
            [
                (NameOID.ORGANIZATION_NAME, "system:nodes"),
                (NameOID.ORGANIZATION_NAME, "system:masters"),
                (NameOID.COMMON_NAME, "system:node:a"),
            ],
            "csr.subject.organization",
        ),
        (
            [(NameOID.ORGANIZATION_NAME, "system:nodes"), (NameOID.COMMON_NAME, "admin")],
            "csr.subject.common_name",
        ),
        ([(NameOID.ORGANIZATION_NAME, "system:nodes")], "csr.subject.common_name"),
        (
            [
                (NameOID.ORGANIZATION_NAME, "system:nodes"),
                (NameOID.COMMON_NAME, "system:node:a"),
                (NameOID.COMMON_NAME, "system:node:b"),
            ],
            "csr.subject.common_name",
        ),
        (
            [
                (NameOID.ORGANIZATION_NAME, "system:nodes"),
                (NameOID.ORGANIZATIONAL_UNIT_NAME, "extra"),
                (NameOID.COMMON_NAME, "system:node:a"),
            ],
            "csr.subject.extra_attributes",
        ),
        (
            [
                (NameOID.ORGANIZATION_NAME, "system:nodes"),
                (NameOID.COMMON_NAME, "system:node:Bad_"),
            ],
            "csr.subject.node_name",
        ),
        (
            [(NameOID.ORGANIZATION_NAME, "system:nodes"), (NameOID.COMMON_NAME, "system:node:")],
            "csr.subject.node_name",
        ),
    ],
)
def test_subject_rules(
    ca: SigningCA, attributes: list[tuple[x509.ObjectIdentifier, str]], check: str
) -> None:
    with pytest.raises(CSRRejectedError) as err:
        sign_kubelet_csr(make_csr(attributes=attributes), ca, node_name=NODE, now=NOW)
    assert check in checks_of(err.value)


def test_csr_for_another_node_is_refused_not_invalid(ca: SigningCA) -> None:
    """A valid CSR for a name the caller's identity does not carry: PERMISSION_DENIED."""
    with pytest.raises(CSRNodeNameError) as err:
        sign_kubelet_csr(make_csr(), ca, node_name="mini-cp-0", now=NOW)
    (failure,) = err.value.failures
    assert failure.check == "csr.node_name"
    assert failure.expected == "CN=system:node:mini-cp-0"
    assert failure.actual == "CN=system:node:worker-1"
    assert isinstance(err.value, RefusedError)
    assert not isinstance(err.value, InvalidRequestError)
    with pytest.raises(CSRNodeNameError):
        KubeletCertSigner(ca, clock=lambda: NOW).sign(make_csr(), node_name="worker-10")


def test_malformed_csr_is_invalid_whatever_the_name(ca: SigningCA) -> None:
    """Format problems are reported as such even when the name differs too."""
    csr = make_csr(attributes=[(NameOID.ORGANIZATION_NAME, "system:masters")])
    with pytest.raises(CSRRejectedError):
        sign_kubelet_csr(csr, ca, node_name="other", now=NOW)


def test_multi_valued_rdn_is_refused(ca: SigningCA) -> None:
    rdn = x509.RelativeDistinguishedName(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
            x509.NameAttribute(NameOID.COMMON_NAME, "system:node:a"),
        ]
    )
    with pytest.raises(CSRRejectedError) as err:
        sign_kubelet_csr(make_csr(rdns=[rdn]), ca, node_name=NODE, now=NOW)
    assert "csr.subject.rdn" in checks_of(err.value)


@pytest.mark.parametrize(
    "san",
    [
        x509.DNSName("worker-1.example"),
        x509.RFC822Name("a@example.com"),
        x509.UniformResourceIdentifier("spiffe://x/y"),
        x509.IPAddress(ipaddress.ip_address(UNSPECIFIED)),
        x509.IPAddress(ipaddress.ip_address("224.0.0.1")),
        x509.IPAddress(ipaddress.ip_network("10.0.0.0/8")),
    ],
)
def test_only_unicast_ip_sans_are_accepted(ca: SigningCA, san: x509.GeneralName) -> None:
    with pytest.raises(CSRRejectedError) as err:
        sign_kubelet_csr(make_csr(sans=[san]), ca, node_name=NODE, now=NOW)
    assert checks_of(err.value) == {"csr.san"}


def test_csr_without_sans_is_signed_without_sans(ca: SigningCA) -> None:
    cert = x509.load_pem_x509_certificate(
        sign_kubelet_csr(make_csr(sans=[]), ca, node_name=NODE, now=NOW).cert_pem
    )
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


@pytest.mark.parametrize(
    "key",
    [weak_rsa_key(), ec.generate_private_key(ec.SECP521R1())],
    ids=["rsa1024", "p521"],
)
def test_weak_or_unexpected_keys_are_refused(
    ca: SigningCA, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
) -> None:
    with pytest.raises(CSRRejectedError) as err:
        sign_kubelet_csr(make_csr(key=key), ca, node_name=NODE, now=NOW)
    assert checks_of(err.value) == {"csr.public_key"}


def test_rsa_2048_key_is_accepted(ca: SigningCA) -> None:
    signed = sign_kubelet_csr(
        make_csr(key=rsa.generate_private_key(65537, 2048)), ca, node_name=NODE, now=NOW
    )
    assert signed.node_name == "worker-1"


def test_every_failure_is_reported_at_once(ca: SigningCA) -> None:
    csr = make_csr(
        attributes=[(NameOID.ORGANIZATION_NAME, "system:masters"), (NameOID.COMMON_NAME, "x")],
        sans=[x509.DNSName("x.example")],
        key=weak_rsa_key(),
    )
    with pytest.raises(CSRRejectedError) as err:
        sign_kubelet_csr(csr, ca, node_name=NODE, now=NOW)
    assert checks_of(err.value) == {
        "csr.subject.organization",
        "csr.subject.common_name",
        "csr.san",
        "csr.public_key",
    }
    assert isinstance(err.value, InvalidRequestError)  # maps to INVALID_ARGUMENT


def test_rsa_ca_is_refused() -> None:
    with pytest.raises(SigningCAError, match="ECDSA"):
        SigningCA.from_pem(*make_ca(rsa.generate_private_key(65537, 2048)))


def test_ca_key_must_match_certificate() -> None:
    cert_pem, _ = make_ca()
    _, other_key = make_ca()
    with pytest.raises(SigningCAError, match="does not belong"):
        SigningCA.from_pem(cert_pem, other_key)


def test_non_ca_certificate_is_refused() -> None:
    with pytest.raises(SigningCAError, match="not a CA"):
        SigningCA.from_pem(*make_ca(is_ca=False))


def test_unparseable_ca_key_error_does_not_quote_it() -> None:
    cert_pem, _ = make_ca()
    with pytest.raises(SigningCAError) as err:
        SigningCA.from_pem(cert_pem, b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END")
    assert "c2VjcmV0" not in str(err.value)
    assert isinstance(err.value, ConfigError)


def test_ca_repr_hides_the_key(ca: SigningCA) -> None:
    assert "redacted" in repr(ca)
    assert "PRIVATE" not in repr(ca)


def test_expired_ca_does_not_sign() -> None:
    old = SigningCA.from_pem(
        *make_ca(not_before=NOW - timedelta(days=20), not_after=NOW - timedelta(days=1))
    )
    with pytest.raises(SigningCAError, match="not valid"):
        sign_kubelet_csr(make_csr(), old, node_name=NODE, now=NOW)


@pytest.mark.parametrize("validity", [timedelta(0), -timedelta(days=1), MAX_VALIDITY * 2])
def test_validity_is_bounded(ca: SigningCA, validity: timedelta) -> None:
    with pytest.raises(SigningCAError):
        sign_kubelet_csr(make_csr(), ca, node_name=NODE, now=NOW, validity=validity)
    with pytest.raises(SigningCAError):
        KubeletCertSigner(ca, validity=validity)


def test_naive_clock_is_refused(ca: SigningCA) -> None:
    with pytest.raises(SigningCAError, match="timezone"):
        sign_kubelet_csr(make_csr(), ca, node_name=NODE, now=NOW.replace(tzinfo=None))


# -- fuzz findings: cryptography parses a CSR lazily, so a part that does not parse raises
# -- only when it is read. Each case patches one part of a real CSR's DER (fuzz target
# -- ``kubelet_csr``); each was an untyped exception before it became a typed refusal.


def patched_csr(old: str, new: str) -> bytes:
    """A CSR from :func:`make_csr` (fixed key) with the DER bytes ``old`` replaced by ``new``."""
    csr = x509.load_pem_x509_csr(make_csr(key=ec.derive_private_key(0xC5, ec.SECP256R1())))
    der = csr.public_bytes(serialization.Encoding.DER)
    assert der.count(bytes.fromhex(old)) == 1
    return _pem(der.replace(bytes.fromhex(old), bytes.fromhex(new)))


def _pem(der: bytes) -> bytes:
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    armored = f"-----BEGIN CERTIFICATE REQUEST-----\n{lines}\n-----END CERTIFICATE REQUEST-----\n"
    return armored.encode()


def test_csr_with_unknown_version_is_malformed(ca: SigningCA) -> None:
    # Was cryptography.x509.InvalidVersion from load_pem_x509_csr.
    with pytest.raises(MalformedCSRError, match="version"):
        sign_kubelet_csr(patched_csr("020100", "020105"), ca, node_name=NODE, now=NOW)


def test_csr_whose_subject_does_not_parse_is_malformed(ca: SigningCA) -> None:
    # Was ValueError ("error parsing asn1 value") from reading ``csr.subject``.
    organization = "0c0c" + b"system:nodes".hex()
    with pytest.raises(MalformedCSRError, match="subject"):
        sign_kubelet_csr(
            patched_csr(organization, "010c" + b"system:nodes".hex()), ca, node_name=NODE, now=NOW
        )


def test_csr_with_off_curve_public_key_is_refused(ca: SigningCA) -> None:
    # Was ValueError ("Invalid key") from ``csr.is_signature_valid``.
    with pytest.raises(CSRRejectedError) as refused:
        sign_kubelet_csr(patched_csr("0482eb86d2", "0482eb86d3"), ca, node_name=NODE, now=NOW)
    assert {"csr.public_key", "csr.signature"} <= checks_of(refused.value)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("2a8648ce3d0201", "2a8648ce3d0209"),  # unknown key algorithm
        ("2a8648ce3d030107", "2a8648ce3d030109"),  # unknown curve
    ],
)
def test_csr_with_unsupported_key_algorithm_is_refused(ca: SigningCA, old: str, new: str) -> None:
    # Was cryptography.exceptions.UnsupportedAlgorithm from ``csr.is_signature_valid``.
    with pytest.raises(CSRRejectedError) as refused:
        sign_kubelet_csr(patched_csr(old, new), ca, node_name=NODE, now=NOW)
    assert "csr.public_key" in checks_of(refused.value)


def _patched_ca(old: str, new: str) -> tuple[bytes, bytes]:
    """A CA from :func:`make_ca` with the certificate's DER bytes ``old`` replaced by ``new``."""
    cert_pem, key_pem = make_ca(ec.derive_private_key(0xCA, ec.SECP256R1()))
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    assert der.count(bytes.fromhex(old)) == 1
    patched = der.replace(bytes.fromhex(old), bytes.fromhex(new))
    body = base64.encodebytes(patched).decode()
    return f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n".encode(), key_pem


@pytest.mark.parametrize(
    ("old", "new", "what"),
    [
        # Was UnsupportedAlgorithm from ``certificate.public_key()``.
        ("2a8648ce3d0201", "2a8648ce3d0209", "public key"),
        # Was ValueError ("error parsing asn1 value") from ``certificate.extensions``: the
        # basicConstraints OID now names subjectAltName, whose value does not parse as one.
        ("551d13", "551d11", "extensions"),
    ],
    ids=["unknown-key-algorithm", "extension-does-not-parse"],
)
def test_ca_certificate_parts_that_do_not_parse_are_a_ca_error(
    old: str, new: str, what: str
) -> None:
    with pytest.raises(SigningCAError, match=what):
        SigningCA.from_pem(*_patched_ca(old, new))
