"""The cluster-internal service PKI `apply` creates: right names and usages, one CA per call,
and the CA key nowhere in what is returned (it is never stored)."""

from __future__ import annotations

import dataclasses
import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from constellation.cli import servicepki
from constellation.cli.servicepki import ServicePKI, TLSBundle, issue_service_pki
from constellation.joinservice.keys import DEFAULT_SERVER_NAME, check_client_tls
from constellation.keyservice.tls import CLIENT_NAME, SERVER_NAME, check_server_tls


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _spki(key_or_cert: object) -> bytes:
    public = key_or_cert.public_key()  # type: ignore[attr-defined]
    return bytes(
        public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _eku(certificate: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_keyservice_server_certificate_names_and_usage() -> None:
    pki = issue_service_pki()
    certificate = _cert(pki.keyservice_server.cert_pem)
    sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "constellation-keyservice",
        "keyservice",
        "keyservice.kube-system",
        "keyservice.kube-system.svc",
        "keyservice.kube-system.svc.cluster.local",
    ]
    assert _eku(certificate) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    # The services agree on the name: the JoinService checks what the KeyService carries.
    assert SERVER_NAME == DEFAULT_SERVER_NAME == "constellation-keyservice"


def test_joinservice_client_certificate_name_and_usage() -> None:
    certificate = _cert(issue_service_pki().joinservice_client.cert_pem)
    (cn,) = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert cn.value == CLIENT_NAME == "constellation-joinservice"
    assert _eku(certificate) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_namespace_and_service_name_go_into_the_sans() -> None:
    pki = issue_service_pki(namespace="constellation", service="ks")
    sans = _cert(pki.keyservice_server.cert_pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    names = sans.value.get_values_for_type(x509.DNSName)
    assert "ks.constellation.svc" in names
    assert SERVER_NAME in names


def test_both_leaves_chain_to_one_leaf_only_ca() -> None:
    pki = issue_service_pki()
    assert pki.keyservice_server.ca_pem == pki.joinservice_client.ca_pem
    ca = _cert(pki.keyservice_server.ca_pem)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert (constraints.ca, constraints.path_length) == (True, 0)
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    for bundle in (pki.keyservice_server, pki.joinservice_client):
        _cert(bundle.cert_pem).verify_directly_issued_by(ca)


def test_each_apply_gets_a_new_ca() -> None:
    first, second = issue_service_pki(), issue_service_pki()
    assert first.keyservice_server.ca_pem != second.keyservice_server.ca_pem
    assert _spki(_cert(first.keyservice_server.ca_pem)) != _spki(
        _cert(second.keyservice_server.ca_pem)
    )


def test_the_ca_key_is_not_persisted() -> None:
    """Nothing returned (and so nothing the CLI can write) holds the CA's private key."""
    pki = issue_service_pki()
    ca_spki = _spki(_cert(pki.keyservice_server.ca_pem))
    assert [f.name for f in dataclasses.fields(ServicePKI)] == [
        "keyservice_server",
        "joinservice_client",
    ]
    assert [f.name for f in dataclasses.fields(TLSBundle)] == ["ca_pem", "cert_pem", "key_pem"]
    for bundle in (pki.keyservice_server, pki.joinservice_client):
        assert set(bundle.secret_data()) == {"ca.crt", "tls.crt", "tls.key"}
        assert b"PRIVATE KEY" not in bundle.ca_pem + bundle.cert_pem
        key = serialization.load_pem_private_key(bundle.key_pem, password=None)
        assert _spki(key) == _spki(_cert(bundle.cert_pem))
        assert _spki(key) != ca_spki
    # The only private keys anywhere in the result are the two leaves'.
    blob = b"".join(
        b"".join(b.secret_data().values()) for b in (pki.keyservice_server, pki.joinservice_client)
    )
    assert blob.count(b"BEGIN PRIVATE KEY") == 2


def test_the_bundles_pass_both_services_start_up_checks() -> None:
    pki = issue_service_pki()
    now = datetime.datetime.now(datetime.UTC)
    server, client = pki.keyservice_server, pki.joinservice_client
    assert check_server_tls(server.cert_pem, server.key_pem, server.ca_pem, now=now) == []
    assert (
        check_client_tls(client.ca_pem, client.cert_pem, client.key_pem, SERVER_NAME, now=now) == []
    )
    # Valid for the cluster's life, and already at a workstation clock that runs a bit ahead.
    certificate = _cert(server.cert_pem)
    assert certificate.not_valid_after_utc - now > datetime.timedelta(days=3000)
    assert certificate.not_valid_before_utc < now - datetime.timedelta(minutes=30)


def test_reprs_do_not_show_keys() -> None:
    pki = issue_service_pki()
    ca = servicepki.create_ca(datetime.datetime.now(datetime.UTC))
    for text in (repr(pki), repr(pki.keyservice_server), repr(pki.joinservice_client), repr(ca)):
        assert "PRIVATE" not in text
        for bundle in (pki.keyservice_server, pki.joinservice_client):
            assert bundle.key_pem.decode().splitlines()[1] not in text
    assert "constellation-keyservice" in repr(pki.keyservice_server)
