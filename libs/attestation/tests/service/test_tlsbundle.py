"""A TLS bundle is checked whole: every reason it cannot authenticate, under the caller's names."""

from __future__ import annotations

import base64
import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from constellation.attestation.atls.certificates import CLIENT_CA_CERT_PEM, CLIENT_CA_KEY_PEM
from constellation.attestation.service.tlsbundle import BundleNames, check_tls_bundle
from constellation.attestation.testing.certs import self_signed

NAMES = BundleNames("tls.cert", "tls.key", "tls.ca")
NOW = datetime.datetime.now(datetime.UTC)
PEM = serialization.Encoding.PEM


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _issue(
    ca_key: object, ca: x509.Certificate, usage: x509.ObjectIdentifier
) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "service")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(hours=1))
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return cert.public_bytes(PEM), _pem_key(key)


def _checks(
    *args: bytes, usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.SERVER_AUTH
) -> set[str]:
    return {f.check for f in check_tls_bundle(*args, usage=usage, names=NAMES, now=NOW)}


def test_a_good_bundle_passes_and_every_defect_is_named() -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = self_signed(ca_key, "service CA")
    ca_pem = ca.public_bytes(PEM)
    cert, key = _issue(ca_key, ca, ExtendedKeyUsageOID.SERVER_AUTH)
    assert _checks(cert, key, ca_pem) == set()
    assert _checks(cert, key, ca_pem, usage=ExtendedKeyUsageOID.CLIENT_AUTH) == {"tls.cert.eku"}
    other_key = _pem_key(ec.generate_private_key(ec.SECP256R1()))
    assert _checks(cert, other_key, ca_pem) == {"tls.key"}
    stranger = self_signed(ec.generate_private_key(ec.SECP256R1()), "service CA").public_bytes(PEM)
    assert _checks(cert, key, stranger) == {"tls.cert.issuer"}
    not_a_ca = self_signed(ec.generate_private_key(ec.SECP256R1()), "leaf", ca=False)
    assert "tls.ca" in _checks(cert, key, not_a_ca.public_bytes(PEM))
    assert _checks(b"x", b"y", b"z") == {"tls.cert", "tls.key", "tls.ca"}


def test_the_public_atls_client_ca_is_never_a_service_ca() -> None:
    """Its key is published with the project: anyone can mint certificates it signed."""
    public_key = serialization.load_pem_private_key(CLIENT_CA_KEY_PEM, password=None)
    public_ca = x509.load_pem_x509_certificate(CLIENT_CA_CERT_PEM)
    cert, key = _issue(public_key, public_ca, ExtendedKeyUsageOID.SERVER_AUTH)
    assert _checks(cert, key, CLIENT_CA_CERT_PEM) == {"tls.ca"}


def _patched(pem: bytes, old: str, new: str) -> bytes:
    """``pem`` with the DER bytes ``old`` replaced by ``new`` (a part that no longer parses)."""
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    assert der.count(bytes.fromhex(old)) == 1
    body = base64.encodebytes(der.replace(bytes.fromhex(old), bytes.fromhex(new))).decode()
    return f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n".encode()


def test_certificate_parts_that_do_not_parse_make_it_unparsable() -> None:
    # cryptography decodes keys and extensions only when read. Were UnsupportedAlgorithm
    # (an unknown key algorithm) and ValueError (an EKU whose value does not parse) from
    # the checks that read them.
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = self_signed(ca_key, "service CA")
    ca_pem = ca.public_bytes(PEM)
    cert, key = _issue(ca_key, ca, ExtendedKeyUsageOID.SERVER_AUTH)
    unknown_key = _patched(cert, "2a8648ce3d0201", "2a8648ce3d0209")
    assert "tls.cert" in _checks(unknown_key, key, ca_pem)
    bad_eku = _patched(cert, "551d25", "551d13")  # the EKU's value read as basicConstraints
    assert "tls.cert" in _checks(bad_eku, key, ca_pem)
    assert "tls.ca" in _checks(cert, key, _patched(ca_pem, "2a8648ce3d0201", "2a8648ce3d0209"))
