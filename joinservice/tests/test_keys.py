"""The KeyService client against the real KeyService over mutual TLS: derived keys, typed
failures, bounded retries, and the client certificate files checked at start-up."""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from constellation.attestation.atls.certificates import CLIENT_CA_CERT_PEM, new_client_identity
from constellation.attestation.kdf import derive_key
from constellation.attestation.service import ServiceMetrics
from constellation.cli.servicepki import ServicePKI, create_ca, issue, issue_service_pki
from constellation.joinservice.errors import ConfigError, UpstreamError
from constellation.joinservice.keys import (
    DEFAULT_SERVER_NAME,
    KeyServiceClient,
    KeyServiceTLS,
    check_client_tls,
    keyservice_channel,
)
from constellation.keyservice.keys import DataKeys, MasterSecret
from constellation.keyservice.server import KeyServiceServer
from constellation.keyservice.tls import load_server_tls

SECRET = MasterSecret(key=os.urandom(32), salt=os.urandom(32))
METHOD = "/kms.API/GetDataKey"


@pytest.fixture(scope="module")
def pki() -> ServicePKI:
    return issue_service_pki()


@pytest.fixture
def metrics() -> ServiceMetrics:
    return ServiceMetrics("keyservice")


@pytest.fixture
def target(metrics: ServiceMetrics, pki: ServicePKI) -> Iterator[str]:
    server_tls = pki.keyservice_server
    server = KeyServiceServer(
        DataKeys(SECRET),
        metrics,
        load_server_tls(server_tls.cert_pem, server_tls.key_pem, server_tls.ca_pem),
    )
    port = server.add_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def client_tls(pki: ServicePKI, server_name: str = DEFAULT_SERVER_NAME) -> KeyServiceTLS:
    client = pki.joinservice_client
    return KeyServiceTLS.load(client.ca_pem, client.cert_pem, client.key_pem, server_name)


@pytest.fixture
def channel(target: str, pki: ServicePKI) -> Iterator[grpc.Channel]:
    with keyservice_channel(target, client_tls(pki)) as channel:
        yield channel


def test_disk_key_is_derived_from_the_lowercase_uuid(channel: grpc.Channel) -> None:
    client = KeyServiceClient(channel)
    disk = "6BA7B810-9DAD-11D1-80B4-00C04FD430C8"
    key = client.state_disk_key(disk)
    expected = derive_key(SECRET.key, SECRET.salt, "key-" + disk.lower(), 32)
    assert key.reveal() == expected
    assert expected.hex() not in repr(key)


def test_measurement_secret(channel: grpc.Channel) -> None:
    secret = KeyServiceClient(channel).measurement_secret()
    assert secret.reveal() == derive_key(SECRET.key, SECRET.salt, "key-measurementSecret", 32)


def test_refused_request_is_not_retried(channel: grpc.Channel, metrics: ServiceMetrics) -> None:
    client = KeyServiceClient(channel, attempts=5, backoff=0.01)
    with pytest.raises(UpstreamError, match="INVALID_ARGUMENT"):
        client.get_data_key("", 32)
    assert metrics.requests(METHOD, "INVALID_ARGUMENT") == 1


def test_unreachable_keyservice_fails_after_bounded_attempts(pki: ServicePKI) -> None:
    # discard port: nothing listens
    with keyservice_channel("127.0.0.1:9", client_tls(pki)) as channel:
        client = KeyServiceClient(channel, timeout=0.5, attempts=2, backoff=0.01)
        with pytest.raises(UpstreamError, match="UNAVAILABLE"):
            client.measurement_secret()


def test_attempts_must_be_positive(channel: grpc.Channel) -> None:
    with pytest.raises(ValueError, match="attempts"):
        KeyServiceClient(channel, attempts=0)


def test_a_keyservice_of_another_apply_is_not_trusted(target: str, metrics: ServiceMetrics) -> None:
    """Client files from a different `apply`: no connection, and the error says what to check."""
    with keyservice_channel(target, client_tls(issue_service_pki())) as channel:
        client = KeyServiceClient(channel, timeout=2, attempts=1)
        with pytest.raises(UpstreamError) as info:
            client.measurement_secret()
    assert "UNAVAILABLE" in str(info.value)
    assert "same `constellation apply`" in str(info.value)
    assert metrics.requests(METHOD, "OK") == 0


def test_a_server_that_does_not_carry_the_expected_name_is_not_trusted(
    target: str, pki: ServicePKI
) -> None:
    with (
        keyservice_channel(target, client_tls(pki, "keyservice.other.svc")) as channel,
        pytest.raises(UpstreamError, match="UNAVAILABLE"),
    ):
        KeyServiceClient(channel, timeout=2, attempts=1).measurement_secret()
    with keyservice_channel(target, client_tls(pki, "keyservice.kube-system.svc")) as channel:
        assert len(KeyServiceClient(channel).measurement_secret().reveal()) == 32


def test_the_cli_bundle_passes_the_start_up_checks(pki: ServicePKI) -> None:
    client = pki.joinservice_client
    now = datetime.datetime.now(datetime.UTC)
    assert check_client_tls(client.ca_pem, client.cert_pem, client.key_pem, "x", now=now) == []
    tls = client_tls(pki)
    assert client.key_pem.decode().splitlines()[1] not in repr(tls)
    assert "redacted" in repr(tls)


def _checks(ca: bytes, cert: bytes, key: bytes, name: str = DEFAULT_SERVER_NAME, **kw) -> set:
    now = kw.get("now", datetime.datetime.now(datetime.UTC))
    return {f.check for f in check_client_tls(ca, cert, key, name, now=now)}


def test_client_files_that_cannot_work_are_refused(pki: ServicePKI) -> None:
    client, server = pki.joinservice_client, pki.keyservice_server
    assert _checks(b"x", b"y", b"z") == {"keyservice.ca", "keyservice.cert", "keyservice.key"}
    assert _checks(client.ca_pem, client.cert_pem, server.key_pem) == {"keyservice.key"}
    # The KeyService's own certificate is no client certificate.
    assert _checks(server.ca_pem, server.cert_pem, server.key_pem) == {"keyservice.cert.eku"}
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=3651)
    assert _checks(client.ca_pem, client.cert_pem, client.key_pem, now=later) == {
        "keyservice.cert.validity"
    }
    other = issue_service_pki().joinservice_client
    assert _checks(client.ca_pem, other.cert_pem, other.key_pem) == {"keyservice.cert.issuer"}
    assert _checks(client.ca_pem, client.cert_pem, client.key_pem, "") == {"keyservice.server_name"}


def test_the_public_atls_client_ca_is_refused(pki: ServicePKI) -> None:
    """An aTLS client identity chains to a CA whose key anybody has: never a KeyService CA."""
    identity = new_client_identity()
    checks = _checks(CLIENT_CA_CERT_PEM, identity.cert_pem, identity.key_pem)
    assert "keyservice.ca" in checks
    with pytest.raises(ConfigError, match="published") as info:
        KeyServiceTLS.load(CLIENT_CA_CERT_PEM, identity.cert_pem, identity.key_pem)
    assert identity.key_pem.decode().splitlines()[1] not in str(info.value)
    assert "constellation-keyservice-client" in str(info.value)


def test_a_certificate_of_another_ca_is_refused_by_the_keyservice(
    target: str, pki: ServicePKI, metrics: ServiceMetrics
) -> None:
    """Checked only by the server: a client CA-consistent bundle from a CA the server lacks."""
    now = datetime.datetime.now(datetime.UTC)
    rogue = issue(
        create_ca(now),
        common_name="constellation-joinservice",
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        now=now,
    )
    tls = KeyServiceTLS(pki.joinservice_client.ca_pem, rogue.cert_pem, rogue.key_pem)
    with (
        keyservice_channel(target, tls) as channel,
        pytest.raises(UpstreamError, match="UNAVAILABLE"),
    ):
        KeyServiceClient(channel, timeout=2, attempts=1).measurement_secret()
    assert metrics.requests(METHOD, "OK") == 0


def test_from_files_names_a_missing_file(tmp_path: Path, pki: ServicePKI) -> None:
    paths = {}
    for name, data in pki.joinservice_client.secret_data().items():
        paths[name] = tmp_path / name
        paths[name].write_bytes(data)
    loaded = KeyServiceTLS.from_files(paths["ca.crt"], paths["tls.crt"], paths["tls.key"])
    assert loaded.cert_pem == pki.joinservice_client.cert_pem
    paths["tls.key"].unlink()
    with pytest.raises(ConfigError, match=f"client key file {paths['tls.key']}"):
        KeyServiceTLS.from_files(paths["ca.crt"], paths["tls.crt"], paths["tls.key"])
