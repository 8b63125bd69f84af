"""Ephemeral aTLS identities: SPKI binding, the public client CA, redaction."""

from __future__ import annotations

import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from constellation.attestation import atls
from constellation.attestation.atls.certificates import (
    CLIENT_CA_CERT_PEM,
    INSPECTION_NONCE,
    CertificateError,
    spki_hash_of_der,
    spki_hash_of_pem,
)


def test_spki_hash_is_sha256_of_der_public_key():
    identity = atls.new_server_identity()
    cert = x509.load_der_x509_certificate(identity.cert_der)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert identity.spki_hash == hashlib.sha256(spki).digest()
    assert spki_hash_of_pem(identity.cert_pem) == identity.spki_hash


def test_every_identity_has_a_fresh_key():
    assert atls.new_server_identity().spki_hash != atls.new_server_identity().spki_hash
    assert atls.new_client_identity().spki_hash != atls.new_client_identity().spki_hash


def test_server_certificate_names_the_pinned_server_name():
    cert = x509.load_der_x509_certificate(atls.new_server_identity().cert_der)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [atls.SERVER_NAME]


def test_client_certificate_chains_to_the_public_client_ca():
    ca = x509.load_pem_x509_certificate(CLIENT_CA_CERT_PEM)
    client = x509.load_der_x509_certificate(atls.new_client_identity().cert_der)
    assert client.issuer == ca.subject
    public_key = ca.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    client.verify_directly_issued_by(ca)


@pytest.mark.parametrize("der", [b"", b"\x30\x03\x02\x01\x00", b"not a certificate"])
def test_unparsable_certificates_are_typed_errors(der):
    with pytest.raises(CertificateError):
        spki_hash_of_der(der)
    with pytest.raises(CertificateError):
        spki_hash_of_pem(der)


def test_identity_repr_hides_the_private_key():
    identity = atls.new_client_identity()
    text = repr(identity)
    assert "redacted" in text
    assert "PRIVATE" not in text
    assert identity.key_pem.decode() not in text


@pytest.mark.swtpm
def test_inspection_attestation_is_embedded_under_the_variant_oid(
    vtpm_attester_factory, start_server
):
    attester = vtpm_attester_factory()  # the registry knows OIDs of real variants only
    running = start_server(attester.issuer(), embed_inspection_attestation=True)
    der = atls.fetch_server_certificate(running.target, atls.new_client_identity())
    cert = x509.load_der_x509_certificate(der)
    extension = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier("1.3.9900.5.1"))
    assert not extension.critical
    document = extension.value.value
    verified = attester.validator().verify(document, INSPECTION_NONCE)
    assert verified.user_data == atls.atls_user_data(running.server.identity.spki_hash)
    # the handshake still demands fresh evidence; the embedded one is for display only
    with atls.connect(running.target, [attester.validator()], timeout=20) as conn:
        assert conn.server.user_data == verified.user_data


def _der_with_point_off_curve(cert_der: bytes) -> bytes:
    """A certificate whose P-256 public point is not on the curve: it loads, its key does not."""
    cert = x509.load_der_x509_certificate(cert_der)
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    x = key.public_numbers().x.to_bytes(32, "big")
    at = cert_der.find(x)
    return cert_der[:at] + bytes([x[0] ^ 1]) + cert_der[at + 1 :]


def test_peer_certificate_with_unusable_key_is_a_certificate_error():
    """Fuzz finding (atls_messages): ``ValueError: Invalid key`` escaped ``spki_hash_of_der``."""
    identity = atls.new_server_identity()
    bad_der = _der_with_point_off_curve(identity.cert_der)
    with pytest.raises(CertificateError, match="public key cannot be read"):
        spki_hash_of_der(bad_der)
    bad_pem = x509.load_der_x509_certificate(bad_der).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CertificateError, match="public key cannot be read"):
        spki_hash_of_pem(bad_pem)
