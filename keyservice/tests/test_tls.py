"""The KeyService's TLS material is checked at start-up, and callers are checked per call.

Every check has a case where it must reject; failures are collected, not stopped at the first.
"""

from __future__ import annotations

import datetime

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from constellation.attestation.atls.certificates import CLIENT_CA_CERT_PEM, new_client_identity
from constellation.cli.servicepki import ServicePKI, create_ca, issue
from constellation.keyservice.errors import TLSConfigError, UnauthorizedCallerError
from constellation.keyservice.tls import (
    CLIENT_NAME,
    SERVER_NAME,
    check_caller,
    check_server_tls,
    load_server_tls,
    peer_certificate,
)


def checks(failures: list) -> set[str]:
    return {f.check for f in failures}


def test_the_cli_pki_passes(service_pki: ServicePKI, now: datetime.datetime) -> None:
    server = service_pki.keyservice_server
    assert check_server_tls(server.cert_pem, server.key_pem, server.ca_pem, now=now) == []
    tls = load_server_tls(server.cert_pem, server.key_pem, server.ca_pem)
    assert "redacted" in repr(tls)
    assert server.key_pem.decode().splitlines()[1] not in repr(tls)


def test_unparsable_files_are_each_named(now: datetime.datetime) -> None:
    failures = check_server_tls(b"not pem", b"not a key", b"not a ca", now=now)
    assert checks(failures) == {"tls.cert", "tls.key", "client_ca"}


def test_key_of_another_certificate_is_refused(
    service_pki: ServicePKI, now: datetime.datetime
) -> None:
    server, client = service_pki.keyservice_server, service_pki.joinservice_client
    failures = check_server_tls(server.cert_pem, client.key_pem, server.ca_pem, now=now)
    assert checks(failures) == {"tls.key"}


def test_a_client_certificate_cannot_serve(service_pki: ServicePKI, now: datetime.datetime) -> None:
    client = service_pki.joinservice_client
    failures = check_server_tls(client.cert_pem, client.key_pem, client.ca_pem, now=now)
    assert checks(failures) == {"tls.cert.eku"}


def test_expired_certificate_is_refused(service_pki: ServicePKI) -> None:
    server = service_pki.keyservice_server
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=3651)
    (failure,) = check_server_tls(server.cert_pem, server.key_pem, server.ca_pem, now=later)
    assert failure.check == "tls.cert.validity"


def test_certificate_of_another_ca_is_refused(
    service_pki: ServicePKI, now: datetime.datetime
) -> None:
    """tls.crt and ca.crt from two different applies: the JoinService could never connect."""
    other = issue(
        create_ca(now),
        common_name=SERVER_NAME,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        dns_names=(SERVER_NAME,),
        now=now,
    )
    failures = check_server_tls(
        other.cert_pem, other.key_pem, service_pki.keyservice_server.ca_pem, now=now
    )
    assert checks(failures) == {"tls.cert.issuer"}


def test_the_public_atls_client_ca_is_refused_as_client_ca(
    service_pki: ServicePKI, now: datetime.datetime
) -> None:
    server = service_pki.keyservice_server
    failures = check_server_tls(server.cert_pem, server.key_pem, CLIENT_CA_CERT_PEM, now=now)
    assert "client_ca" in checks(failures)
    assert any("published" in f.actual for f in failures)


def test_a_leaf_is_not_a_client_ca(service_pki: ServicePKI, now: datetime.datetime) -> None:
    server = service_pki.keyservice_server
    failures = check_server_tls(server.cert_pem, server.key_pem, server.cert_pem, now=now)
    assert "client_ca" in checks(failures)


def test_every_failure_is_reported_at_once_without_key_material(
    service_pki: ServicePKI,
) -> None:
    client = service_pki.joinservice_client
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=3651)
    with pytest.raises(TLSConfigError) as info:
        load_server_tls(
            client.cert_pem, service_pki.keyservice_server.key_pem, CLIENT_CA_CERT_PEM, now=later
        )
    assert checks(list(info.value.failures)) >= {
        "tls.key",
        "tls.cert.validity",
        "tls.cert.eku",
        "client_ca",
        "tls.cert.issuer",
    }
    message = str(info.value)
    assert "constellation-keyservice-tls" in message  # what to do
    for key in (client.key_pem, service_pki.keyservice_server.key_pem):
        assert key.decode().splitlines()[1] not in message


def test_the_joinservice_certificate_is_an_authorized_caller(service_pki: ServicePKI) -> None:
    assert check_caller(service_pki.joinservice_client.cert_pem) == []


def test_callers_that_are_not_the_joinservice_are_refused(
    service_pki: ServicePKI, now: datetime.datetime
) -> None:
    assert checks(check_caller(None)) == {"caller.certificate"}
    assert checks(check_caller(b"garbage")) == {"caller.certificate"}
    # The KeyService's own certificate (same CA) is neither the JoinService nor a client.
    assert checks(check_caller(service_pki.keyservice_server.cert_pem)) == {
        "caller.cn",
        "caller.eku",
    }
    other = issue(
        create_ca(now), common_name="intruder", usage=ExtendedKeyUsageOID.CLIENT_AUTH, now=now
    )
    (failure,) = check_caller(other.cert_pem)
    assert (failure.check, failure.expected, failure.actual) == (
        "caller.cn",
        CLIENT_NAME,
        "intruder",
    )
    atls_client = new_client_identity()
    assert "caller.cn" in checks(check_caller(atls_client.cert_pem))
    error = UnauthorizedCallerError(check_caller(other.cert_pem))
    assert "intruder" in str(error)
    assert "constellation-keyservice-client" in str(error)


def test_peer_certificate_reads_the_auth_context() -> None:
    assert peer_certificate({}) is None
    assert peer_certificate({"x509_pem_cert": [b"PEM"]}) == b"PEM"
