"""The first control-plane node signs its own kubelet CSR with the new cluster CA."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from constellation.bootstrapper.registration import (
    RegistrationError,
    create_kubelet_identity,
    sign_own_kubelet_csr,
)
from constellation.bootstrapper.testing import ClusterCA

NOW = datetime.datetime.now(datetime.UTC)


def _key_pem(ca: ClusterCA) -> bytes:
    return ca.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def test_own_certificate_has_the_joinservice_profile() -> None:
    ca = ClusterCA.generate()
    identity = create_kubelet_identity("cp-0", "127.0.0.1")
    cert = x509.load_pem_x509_certificate(
        sign_own_kubelet_csr(identity, ca.cert_pem, _key_pem(ca), now=NOW)
    )
    subject = {a.oid: a.value for a in cert.subject}
    assert subject == {
        NameOID.ORGANIZATION_NAME: "system:nodes",
        NameOID.COMMON_NAME: "system:node:cp-0",
    }
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ips = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in ips.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    cert.verify_directly_issued_by(ca_cert)
    assert cert.not_valid_after_utc <= ca_cert.not_valid_after_utc  # never beyond the CA


def test_expired_cluster_ca_is_refused() -> None:
    ca = ClusterCA.generate()
    identity = create_kubelet_identity("cp-0", "127.0.0.1")
    with pytest.raises(RegistrationError, match="not valid"):
        sign_own_kubelet_csr(
            identity, ca.cert_pem, _key_pem(ca), now=NOW + datetime.timedelta(days=30)
        )


def test_csr_of_another_node_is_refused() -> None:
    ca = ClusterCA.generate()
    identity = create_kubelet_identity("cp-0", "127.0.0.1")
    other = create_kubelet_identity("cp-1", "127.0.0.1")
    mixed = type(identity)(identity.node_name, identity.node_ip, identity.key, other.csr_pem)
    with pytest.raises(RegistrationError, match="CN="):
        sign_own_kubelet_csr(mixed, ca.cert_pem, _key_pem(ca), now=NOW)


def test_csr_for_another_key_yields_no_certificate() -> None:
    ca = ClusterCA.generate()
    identity = create_kubelet_identity("cp-0", "127.0.0.1")
    other = create_kubelet_identity("cp-0", "127.0.0.1")
    mixed = type(identity)(identity.node_name, identity.node_ip, identity.key, other.csr_pem)
    with pytest.raises(RegistrationError, match="not for this node's key"):
        sign_own_kubelet_csr(mixed, ca.cert_pem, _key_pem(ca), now=NOW)


def test_garbage_ca_key_is_refused() -> None:
    ca = ClusterCA.generate()
    identity = create_kubelet_identity("cp-0", "127.0.0.1")
    with pytest.raises(RegistrationError, match="cannot load"):
        sign_own_kubelet_csr(identity, ca.cert_pem, b"not a key", now=NOW)
