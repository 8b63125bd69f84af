"""The client side of aTLS against real gRPC servers on loopback (P1, P3, P4)."""

from __future__ import annotations

import socket
import threading

import grpc
import pytest

from constellation.attestation import atls
from constellation.attestation.atls.protocol import HANDSHAKE_METHOD, atls_user_data
from constellation.attestation.errors import MalformedEvidenceError, ValidationError
from constellation.attestation.evidence import ATLS_USER_DATA_LABEL, VERIFY_USER_DATA_LABEL
from constellation.proto import atls_pb2, atls_pb2_grpc


def test_connect_returns_channel_after_server_attested(attester, start_server, kit):
    running = start_server(attester.issuer())
    with atls.connect(running.target, [attester.validator()], timeout=20) as conn:
        assert conn.server.variant == attester.issuer().variant
        assert conn.server.user_data == atls_user_data(running.server.identity.spki_hash)
        assert kit.call_echo(conn.channel) == b"unattested:hi"
    assert running.recorder.methods == [HANDSHAKE_METHOD, kit.echo_method]


def test_wrong_measurements_refused_before_any_application_call(attester, start_server):
    running = start_server(attester.issuer())
    with pytest.raises(ValidationError) as refused:
        atls.connect(running.target, [attester.wrong_validator()], timeout=20)
    assert any(f.check.startswith("pcr[") for f in refused.value.failures)
    # P1: the server saw the handshake and nothing else.
    assert running.recorder.methods == [HANDSHAKE_METHOD]
    assert running.echo.calls == 0


class RelayIssuer:
    """A man in the middle: answers with the evidence of another (genuine) aTLS server."""

    def __init__(self, genuine_target: str, variant: str) -> None:
        self.variant = variant
        self._target = genuine_target

    def issue(self, user_data: bytes, nonce: bytes) -> bytes:
        client = atls.new_client_identity()
        cert = atls.fetch_server_certificate(self._target, client)
        pem = grpc.ssl_channel_credentials(
            root_certificates=_pem(cert),
            private_key=client.key_pem,
            certificate_chain=client.cert_pem,
        )
        with grpc.secure_channel(
            self._target, pem, options=[("grpc.ssl_target_name_override", atls.SERVER_NAME)]
        ) as channel:
            answer = atls_pb2_grpc.HandshakeStub(channel).Attest(
                atls_pb2.AttestRequest(client_nonce=nonce), timeout=20
            )
        return bytes(answer.attestation)


def _pem(der: bytes) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def test_evidence_bound_to_another_key_refused(attester, start_server):
    genuine = start_server(attester.issuer())
    relay = start_server(RelayIssuer(genuine.target, attester.issuer().variant))
    with pytest.raises(ValidationError) as refused:
        atls.connect(relay.target, [attester.validator()], timeout=20)
    assert [f.check for f in refused.value.failures] == ["atls.user_data"]
    assert relay.echo.calls == 0


class ReplayIssuer:
    """A server that answers every handshake with the evidence it produced the first time."""

    def __init__(self, inner) -> None:
        self.variant = inner.variant
        self._inner = inner
        self._first: bytes | None = None

    def issue(self, user_data: bytes, nonce: bytes) -> bytes:
        if self._first is None:
            self._first = self._inner.issue(user_data, nonce)
        return self._first


def test_replayed_server_evidence_refused(attester, start_server):
    running = start_server(ReplayIssuer(attester.issuer()))
    atls.connect(running.target, [attester.validator()], timeout=20).close()
    with pytest.raises(ValidationError):
        atls.connect(running.target, [attester.validator()], timeout=20)
    assert running.echo.calls == 0


def test_pinned_channel_refuses_a_server_with_another_key(attester, start_server):
    genuine = start_server(attester.issuer())
    impostor = start_server(RelayIssuer(genuine.target, attester.issuer().variant))
    pinned = atls.fetch_server_certificate(genuine.target, atls.new_client_identity())
    with pytest.raises(atls.ATLSConnectionError):
        atls.connect_pinned(impostor.target, pinned, [attester.validator()], timeout=3)
    assert impostor.recorder.methods == []


def test_copied_certificate_without_its_key_refused(double, start_server):
    """An impostor holding only a copy of the certificate cannot even serve TLS with it.

    Serving it with the impostor's own key is refused by the TLS stack; the other half, a
    client pinned to the genuine certificate reaching a server with another key, is
    ``test_pinned_channel_refuses_a_server_with_another_key``.
    """
    genuine = start_server(double.issuer())
    attacker_key = atls.new_server_identity()
    copied = atls.TLSIdentity(
        key_pem=attacker_key.key_pem,
        cert_pem=genuine.server.identity.cert_pem,
        cert_der=genuine.server.identity.cert_der,
    )
    with pytest.raises(atls.ATLSError, match="must match"):
        start_server(RelayIssuer(genuine.target, double.issuer().variant), identity=copied)


def test_server_without_evidence_refused(start_server, double):
    class Silent:
        variant = double.issuer().variant

        def issue(self, user_data: bytes, nonce: bytes) -> bytes:
            return b""

    running = start_server(Silent())
    with pytest.raises(atls.ATLSHandshakeError):
        atls.connect(running.target, [double.validator()], timeout=5)


def test_server_with_malformed_evidence_refused(start_server, double):
    class Garbage:
        variant = double.issuer().variant

        def issue(self, user_data: bytes, nonce: bytes) -> bytes:
            return b"\x00not a document"

    running = start_server(Garbage())
    with pytest.raises(MalformedEvidenceError):
        atls.connect(running.target, [double.validator()], timeout=5)
    assert running.echo.calls == 0


def test_server_with_unknown_variant_refused(start_server, double, kit):
    class Other:
        variant = "azure-tdx"

        def issue(self, user_data: bytes, nonce: bytes) -> bytes:
            return double.issuer().issue(user_data, nonce)

    running = start_server(Other())
    with pytest.raises(ValidationError) as refused:
        atls.connect(running.target, [double.validator()], timeout=5)
    assert [f.check for f in refused.value.failures] == ["atls.variant"]


def test_unreachable_server_is_a_connection_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(atls.ATLSConnectionError):
        atls.connect(f"127.0.0.1:{port}", [object()], timeout=2)  # type: ignore[list-item]


def test_silent_peer_times_out():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    thread.start()
    try:
        with pytest.raises(atls.ATLSConnectionError):
            atls.connect(f"127.0.0.1:{listener.getsockname()[1]}", [object()], timeout=1)
    finally:
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()


@pytest.mark.parametrize("target", ["localhost", "127.0.0.1:", ":80", "127.0.0.1:99999", "h:x"])
def test_malformed_target_rejected(target):
    with pytest.raises(atls.ATLSError):
        atls.connect(target, [object()], timeout=1)  # type: ignore[list-item]


@pytest.mark.parametrize("nonce", [b"short", bytes(16), bytes(31), bytes(33), bytes(64)])
def test_client_nonce_of_other_than_32_bytes_rejected_by_server(start_server, double, nonce):
    running = start_server(double.issuer())
    client = atls.new_client_identity()
    der = atls.fetch_server_certificate(running.target, client)
    creds = grpc.ssl_channel_credentials(root_certificates=_pem(der))
    with (
        grpc.secure_channel(
            running.target, creds, options=[("grpc.ssl_target_name_override", atls.SERVER_NAME)]
        ) as channel,
        pytest.raises(grpc.RpcError) as failed,
    ):
        atls_pb2_grpc.HandshakeStub(channel).Attest(
            atls_pb2.AttestRequest(client_nonce=nonce), timeout=5
        )
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "exactly 32 bytes" in failed.value.details()


def test_verification_service_evidence_refused_as_atls_evidence(start_server, double):
    """Label separation: evidence issued for ``constellation verify`` names no TLS key."""

    class VerifyPurpose:
        variant = double.issuer().variant

        def issue(self, user_data: bytes, nonce: bytes) -> bytes:
            return double.issuer().issue(VERIFY_USER_DATA_LABEL, nonce)

    running = start_server(VerifyPurpose())
    with pytest.raises(ValidationError) as refused:
        atls.connect(running.target, [double.validator()], timeout=5)
    assert [f.check for f in refused.value.failures] == ["atls.user_data"]
    assert running.echo.calls == 0


def test_unlabelled_key_hash_refused(start_server, double):
    """Evidence over the bare SPKI hash (no aTLS label) does not bind the key for aTLS."""

    class Unlabelled:
        variant = double.issuer().variant

        def issue(self, user_data: bytes, nonce: bytes) -> bytes:
            return double.issuer().issue(user_data[len(ATLS_USER_DATA_LABEL) :], nonce)

    running = start_server(Unlabelled())
    with pytest.raises(ValidationError) as refused:
        atls.connect(running.target, [double.validator()], timeout=5)
    assert [f.check for f in refused.value.failures] == ["atls.user_data"]


def test_rate_bound_refuses_the_handshake_with_the_wait(start_server, double):
    clock = [100.0]
    running = start_server(
        double.issuer(), rate_limit=atls.TokenBucket(rate=2, burst=1, clock=lambda: clock[0])
    )
    atls.connect(running.target, [double.validator()], timeout=5).close()
    with pytest.raises(atls.ATLSHandshakeError, match=r"RESOURCE_EXHAUSTED.*retry in 500 ms"):
        atls.connect(running.target, [double.validator()], timeout=5)
    clock[0] += 0.5
    atls.connect(running.target, [double.validator()], timeout=5).close()
