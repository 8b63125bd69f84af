"""Kubelet identity: the CSR the JoinService signs and the certificate checks on the way back."""

from __future__ import annotations

import datetime
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from constellation.bootstrapper.registration import (
    KubeletIdentity,
    RegistrationError,
    create_kubelet_identity,
    validate_node_name,
)


def test_csr_has_exactly_the_node_subject_and_ip_san() -> None:
    identity = create_kubelet_identity("worker-1", "127.0.0.12")
    csr = x509.load_pem_x509_csr(identity.csr_pem)
    assert csr.is_signature_valid
    assert [(a.oid, a.value) for a in csr.subject] == [
        (NameOID.ORGANIZATION_NAME, "system:nodes"),
        (NameOID.COMMON_NAME, "system:node:worker-1"),
    ]
    sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.12")]
    key = identity.key
    assert isinstance(key.curve, ec.SECP256R1)
    assert "redacted" in repr(identity)
    assert b"PRIVATE" not in repr(identity).encode()


def test_every_identity_has_a_fresh_key() -> None:
    first = create_kubelet_identity("worker-1", "127.0.0.12")
    second = create_kubelet_identity("worker-1", "127.0.0.12")
    assert first.key_pem != second.key_pem


@pytest.mark.parametrize("name", ["Worker", "-a", "a_b", "", "x" * 254])
def test_bad_node_names_are_refused(name: str) -> None:
    with pytest.raises(RegistrationError):
        validate_node_name(name)


def test_bad_ip_is_refused() -> None:
    with pytest.raises(RegistrationError, match="IP"):
        create_kubelet_identity("worker-1", "not-an-ip")


def _issue(
    identity: KubeletIdentity,
    *,
    cn: str | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.load_pem_x509_csr(identity.csr_pem)
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]) if cn else csr.subject
    public = key.public_key() if key else csr.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ca")]))
        .public_key(public)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def test_certificate_for_our_key_and_name_is_accepted() -> None:
    identity = create_kubelet_identity("worker-1", "127.0.0.12")
    cert = identity.check_certificate(_issue(identity))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "system:node:worker-1"
    )


def test_certificate_for_another_key_is_refused() -> None:
    identity = create_kubelet_identity("worker-1", "127.0.0.12")
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(RegistrationError, match="not for this node's key"):
        identity.check_certificate(_issue(identity, key=other))


def test_certificate_for_another_node_is_refused() -> None:
    identity = create_kubelet_identity("worker-1", "127.0.0.12")
    with pytest.raises(RegistrationError, match="system:node:worker-1"):
        identity.check_certificate(_issue(identity, cn="system:node:worker-2"))


def test_garbage_certificate_is_refused() -> None:
    identity = create_kubelet_identity("worker-1", "127.0.0.12")
    with pytest.raises(RegistrationError, match="not PEM"):
        identity.check_certificate(b"garbage")
