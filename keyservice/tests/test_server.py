"""The KeyService over real gRPC on loopback: mutual TLS with the cluster-internal service CA.

Only the JoinService's client certificate gets a key. Every other caller is refused: without a
certificate, with one from another CA (including the public aTLS client CA, whose key anybody
has), in plaintext, or with a certificate from the right CA that does not name the JoinService.
A client that trusts another CA or expects another server name does not connect either.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from constellation.attestation.atls.certificates import (
    CLIENT_CA_CERT_PEM,
    new_client_identity,
    new_server_identity,
)
from constellation.attestation.service.metrics import ServiceMetrics
from constellation.cli.servicepki import (
    CertificateAuthority,
    ServicePKI,
    TLSBundle,
    create_ca,
    issue,
)
from constellation.keyservice.keys import DataKeys, MasterSecret
from constellation.keyservice.server import KeyServiceServer
from constellation.keyservice.tls import CLIENT_NAME, SERVER_NAME, load_server_tls
from constellation.proto import kms_pb2, kms_pb2_grpc

ZERO_UUID = "00000000-0000-0000-0000-000000000000"
METHOD = "/kms.API/GetDataKey"


@dataclass
class Running:
    service: KeyServiceServer
    port: int
    health_port: int


@pytest.fixture
def running(service_pki: ServicePKI) -> Iterator[Running]:
    keys = DataKeys(MasterSecret(key=b"\x00" * 32, salt=b"\x00" * 32))
    server = service_pki.keyservice_server
    tls = load_server_tls(server.cert_pem, server.key_pem, server.ca_pem)
    service = KeyServiceServer(keys, ServiceMetrics("keyservice"), tls)
    port = service.add_port("127.0.0.1:0")
    health_port = service.add_health_port("127.0.0.1:0")
    service.start()
    try:
        yield Running(service, port, health_port)
    finally:
        service.stop(None)


def get_key(channel: grpc.Channel, data_key_id: str = ZERO_UUID, length: int = 32) -> bytes:
    answer = kms_pb2_grpc.APIStub(channel).GetDataKey(
        kms_pb2.GetDataKeyRequest(data_key_id=data_key_id, length=length), timeout=10
    )
    return bytes(answer.data_key)


def refused(channel: grpc.Channel) -> grpc.RpcError:
    with channel, pytest.raises(grpc.RpcError) as info:
        get_key(channel)
    return info.value


def test_joinservice_certificate_gets_the_hkdf_key(
    running: Running, service_pki: ServicePKI, tls_channel
) -> None:
    with tls_channel(running.port, service_pki.joinservice_client) as channel:
        key = get_key(channel)
    expected = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"\x00" * 32, info=f"key-{ZERO_UUID}".encode()
    ).derive(b"\x00" * 32)
    assert key == expected
    assert running.service.metrics.requests(METHOD, "OK") == 1


def test_plaintext_caller_is_refused(running: Running) -> None:
    error = refused(grpc.insecure_channel(f"127.0.0.1:{running.port}"))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert running.service.metrics.requests(METHOD, "OK") == 0


def test_caller_without_a_client_certificate_is_refused(
    running: Running, service_pki: ServicePKI, tls_channel
) -> None:
    """It even trusts the right CA: the handshake still fails without a client certificate."""
    error = refused(tls_channel(running.port, ca=service_pki.keyservice_server.ca_pem))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("issuer", ["another CA", "the public aTLS client CA"])
def test_certificate_from_another_ca_is_refused(
    running: Running, service_pki: ServicePKI, tls_channel, issuer: str
) -> None:
    if issuer == "another CA":
        now = datetime.datetime.now(datetime.UTC)
        other = issue(
            create_ca(now), common_name=CLIENT_NAME, usage=ExtendedKeyUsageOID.CLIENT_AUTH, now=now
        )
        bundle = TLSBundle(service_pki.keyservice_server.ca_pem, other.cert_pem, other.key_pem)
    else:
        # Anybody can mint this one: the aTLS client CA's key is published on purpose.
        identity = new_client_identity()
        bundle = TLSBundle(
            service_pki.keyservice_server.ca_pem, identity.cert_pem, identity.key_pem
        )
    error = refused(tls_channel(running.port, bundle))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert running.service.metrics.requests(METHOD, "OK") == 0


def test_the_keyservices_own_certificate_is_not_a_client(
    running: Running, service_pki: ServicePKI, tls_channel
) -> None:
    """Same CA, but a server certificate: the handshake refuses it (EKU serverAuth only)."""
    error = refused(tls_channel(running.port, service_pki.keyservice_server))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_same_ca_but_not_the_joinservice_is_permission_denied(
    service_pki: ServicePKI, tls_channel
) -> None:
    """If the CA ever issued a third client certificate, its holder still gets no key.

    The CLI discards its CA key, so this test builds a CA whose key it keeps.
    """
    now = datetime.datetime.now(datetime.UTC)
    ca: CertificateAuthority = create_ca(now)
    server = issue(
        ca,
        common_name=SERVER_NAME,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        dns_names=(SERVER_NAME,),
        now=now,
    )
    intruder = issue(ca, common_name="intruder", usage=ExtendedKeyUsageOID.CLIENT_AUTH, now=now)
    joinservice = issue(ca, common_name=CLIENT_NAME, usage=ExtendedKeyUsageOID.CLIENT_AUTH, now=now)
    tls = load_server_tls(server.cert_pem, server.key_pem, server.ca_pem)
    service = KeyServiceServer(
        DataKeys(MasterSecret(b"k" * 32, b"s" * 32)), ServiceMetrics("ks"), tls
    )
    port = service.add_port("127.0.0.1:0")
    service.start()
    try:
        error = refused(tls_channel(port, intruder))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "caller.cn: expected constellation-joinservice, got intruder" in error.details()
        assert service.metrics.requests(METHOD, "PERMISSION_DENIED") == 1
        with tls_channel(port, joinservice) as channel:
            assert len(get_key(channel)) == 32
    finally:
        service.stop(None)


def test_client_that_trusts_another_ca_does_not_connect(
    running: Running, service_pki: ServicePKI, tls_channel
) -> None:
    client = service_pki.joinservice_client
    for ca in (create_ca(datetime.datetime.now(datetime.UTC)).cert_pem, CLIENT_CA_CERT_PEM):
        error = refused(tls_channel(running.port, client, ca=ca))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert running.service.metrics.requests(METHOD, "OK") == 0


def test_client_that_expects_another_server_name_does_not_connect(
    running: Running, service_pki: ServicePKI, tls_channel
) -> None:
    client = service_pki.joinservice_client
    error = refused(tls_channel(running.port, client, name="constellation-atls.invalid"))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    # The service's DNS names are in the certificate too.
    with tls_channel(running.port, client, name="keyservice.kube-system.svc") as channel:
        assert len(get_key(channel)) == 32


def test_a_server_with_another_certificate_is_not_trusted(
    service_pki: ServicePKI, tls_channel
) -> None:
    """An impostor KeyService (say, an aTLS server identity) does not get the client's calls."""
    impostor = new_server_identity()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    credentials = grpc.ssl_server_credentials([(impostor.key_pem, impostor.cert_pem)])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        error = refused(tls_channel(port, service_pki.joinservice_client))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(None).wait(5)


def test_invalid_requests_are_invalid_argument(
    running: Running, service_pki: ServicePKI, tls_channel
) -> None:
    with tls_channel(running.port, service_pki.joinservice_client) as channel:
        for data_key_id, length in [("", 32), (ZERO_UUID, 0), (ZERO_UUID, 4097), ("x" * 300, 32)]:
            with pytest.raises(grpc.RpcError) as info:
                get_key(channel, data_key_id, length)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert running.service.metrics.requests(METHOD, "INVALID_ARGUMENT") == 4


def test_plaintext_health_port_serves_health_only(running: Running) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{running.health_port}") as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="kms.API"), timeout=10
        )
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            get_key(channel)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_health_over_tls_needs_the_client_certificate_too(
    running: Running, service_pki: ServicePKI, tls_channel
) -> None:
    with tls_channel(running.port, service_pki.joinservice_client) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    with (
        tls_channel(running.port, ca=service_pki.keyservice_server.ca_pem) as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_health_goes_not_serving_on_stop(service_pki: ServicePKI) -> None:
    server = service_pki.keyservice_server
    tls = load_server_tls(server.cert_pem, server.key_pem, server.ca_pem)
    service = KeyServiceServer(
        DataKeys(MasterSecret(b"k" * 32, b"s" * 32)), ServiceMetrics("k"), tls
    )
    service.add_port("127.0.0.1:0")
    assert service.grpc_servers == [service.grpc_server]  # no health port asked for
    service.start()
    service.stop(0)
    assert service.health.servicer.Check(health_pb2.HealthCheckRequest(), None).status == (
        health_pb2.HealthCheckResponse.NOT_SERVING
    )


#: Field 1 announcing 16 bytes of which 9 follow: not a GetDataKeyRequest (nor any message).
UNDECODABLE = b"\x0a\x10truncated"


def test_undecodable_request_is_invalid_argument(
    running: Running, service_pki: ServicePKI, tls_channel
) -> None:
    # Was INTERNAL ("Exception deserializing request!"), grpcio's own answer.
    with (
        tls_channel(running.port, service_pki.joinservice_client) as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        channel.unary_unary(METHOD)(UNDECODABLE, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert running.service.metrics.requests(METHOD, "INVALID_ARGUMENT") == 1


def test_undecodable_health_probe_is_invalid_argument(running: Running) -> None:
    with (
        grpc.insecure_channel(f"127.0.0.1:{running.health_port}") as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        channel.unary_unary("/grpc.health.v1.Health/Check")(UNDECODABLE, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
