"""The server side of mutual aTLS: no protected method before verified client evidence (P2)."""

from __future__ import annotations

import datetime
import json
import os

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from constellation.attestation import atls
from constellation.attestation.atls.certificates import CLIENT_CA_CERT_PEM, CLIENT_CA_KEY_PEM
from constellation.attestation.atls.protocol import (
    HANDSHAKE_METHOD,
    METADATA_EVIDENCE,
    METADATA_NONCE,
    METADATA_VARIANT,
    atls_user_data,
)
from constellation.attestation.evidence import ATLS_USER_DATA_LABEL, VERIFY_USER_DATA_LABEL
from constellation.proto import atls_pb2, atls_pb2_grpc


def _pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def _recertify(identity: atls.TLSIdentity) -> atls.TLSIdentity:
    """A second client-CA certificate for the same key (what a replaying key-holder could do)."""
    key = serialization.load_pem_private_key(identity.key_pem, password=None)
    ca_key = serialization.load_pem_private_key(CLIENT_CA_KEY_PEM, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(x509.load_pem_x509_certificate(CLIENT_CA_CERT_PEM).subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(ca_key, hashes.SHA256())
    )
    return atls.TLSIdentity(
        key_pem=identity.key_pem,
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        cert_der=cert.public_bytes(serialization.Encoding.DER),
    )


def _channel(target: str, server_der: bytes, client: atls.TLSIdentity | None) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=_pem(server_der),
        private_key=client.key_pem if client else None,
        certificate_chain=client.cert_pem if client else None,
    )
    return grpc.secure_channel(
        target, creds, options=[("grpc.ssl_target_name_override", atls.SERVER_NAME)]
    )


def _server_nonce(channel: grpc.Channel) -> bytes:
    answer = atls_pb2_grpc.HandshakeStub(channel).Attest(
        atls_pb2.AttestRequest(client_nonce=os.urandom(32)), timeout=20
    )
    return bytes(answer.server_nonce)


def _call_with(channel: grpc.Channel, method: str, variant: str, doc: bytes, nonce: bytes):
    return channel.unary_unary(method)(
        b"hi",
        timeout=20,
        metadata=((METADATA_VARIANT, variant), (METADATA_EVIDENCE, doc), (METADATA_NONCE, nonce)),
    )


def test_mutual_client_reaches_handler_with_its_verified_evidence(attester, start_server, kit):
    running = start_server(attester.issuer(), client_validators=[attester.validator()])
    with atls.connect(
        running.target, [attester.validator()], issuer=attester.issuer(), timeout=20
    ) as conn:
        first = kit.call_echo(conn.channel)
        second = kit.call_echo(conn.channel)  # the verified key is remembered: no new nonce
    assert first == second
    # The labelled SHA-256 of the client's SPKI, as the handler sees it.
    assert first.startswith(ATLS_USER_DATA_LABEL)
    assert len(first) == len(ATLS_USER_DATA_LABEL) + 32
    assert running.echo.calls == 2
    assert running.recorder.methods == [HANDSHAKE_METHOD, kit.echo_method, kit.echo_method]


def test_client_without_evidence_cannot_call_protected_method(attester, start_server, kit):
    running = start_server(attester.issuer(), client_validators=[attester.validator()])
    with (
        atls.connect(running.target, [attester.validator()], timeout=20) as conn,
        pytest.raises(grpc.RpcError) as refused,
    ):
        kit.call_echo(conn.channel)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert running.echo.calls == 0


def test_client_without_certificate_cannot_connect(double, start_server, kit):
    running = start_server(double.issuer(), client_validators=[double.validator()])
    der = atls.fetch_server_certificate(running.target, atls.new_client_identity())
    with _channel(running.target, der, None) as channel, pytest.raises(grpc.RpcError) as refused:
        kit.call_echo(channel, timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert running.echo.calls == 0


def test_client_evidence_bound_to_another_key_refused(attester, start_server, kit):
    running = start_server(attester.issuer(), client_validators=[attester.validator()])
    me, other = atls.new_client_identity(), atls.new_client_identity()
    der = atls.fetch_server_certificate(running.target, me)
    issuer = attester.issuer()
    with _channel(running.target, der, me) as channel:
        nonce = _server_nonce(channel)
        doc = issuer.issue(atls_user_data(other.spki_hash), nonce)
        with pytest.raises(grpc.RpcError) as refused:
            _call_with(channel, kit.echo_method, issuer.variant, doc, nonce)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "atls.user_data" in refused.value.details()
    assert running.echo.calls == 0


def test_client_with_malformed_evidence_refused(double, start_server, kit):
    running = start_server(double.issuer(), client_validators=[double.validator()])
    me = atls.new_client_identity()
    der = atls.fetch_server_certificate(running.target, me)
    with _channel(running.target, der, me) as channel:
        nonce = _server_nonce(channel)
        with pytest.raises(grpc.RpcError) as refused:
            _call_with(channel, kit.echo_method, double.issuer().variant, b"{garbage", nonce)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert running.echo.calls == 0


def test_client_with_wrong_measurements_refused(attester, start_server, kit):
    running = start_server(attester.issuer(), client_validators=[attester.wrong_validator()])
    with (
        atls.connect(
            running.target, [attester.validator()], issuer=attester.issuer(), timeout=20
        ) as conn,
        pytest.raises(grpc.RpcError) as refused,
    ):
        kit.call_echo(conn.channel)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "pcr[4]" in refused.value.details()
    assert running.echo.calls == 0


def test_replayed_client_nonce_refused(attester, start_server, kit):
    running = start_server(attester.issuer(), client_validators=[attester.validator()])
    me = atls.new_client_identity()
    der = atls.fetch_server_certificate(running.target, me)
    issuer = attester.issuer()
    mine = atls_user_data(me.spki_hash)
    with _channel(running.target, der, me) as channel:
        nonce = _server_nonce(channel)
        doc = issuer.issue(mine, nonce)
        assert _call_with(channel, kit.echo_method, issuer.variant, doc, nonce) == mine
    # The server forgets its remembered clients (as on new measurements): the same
    # certificate presents the same evidence again, but its nonce was spent.
    gate = running.server.client_gate
    assert gate is not None
    gate.set_validators([attester.validator()])
    with _channel(running.target, der, me) as channel, pytest.raises(grpc.RpcError) as refused:
        _call_with(channel, kit.echo_method, issuer.variant, doc, nonce)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "already used" in refused.value.details()
    assert running.echo.calls == 1


def test_nonce_replayed_with_another_client_certificate_refused(attester, start_server, kit):
    """A nonce is bound to the certificate of the ``Attest`` call that obtained it."""
    running = start_server(attester.issuer(), client_validators=[attester.validator()])
    me = atls.new_client_identity()
    der = atls.fetch_server_certificate(running.target, me)
    issuer = attester.issuer()
    with _channel(running.target, der, me) as channel:
        nonce = _server_nonce(channel)
    # Same key, another certificate (what a relaying key-holder could mint), and an entirely
    # different key: both bind their evidence correctly, neither may use my nonce.
    for other in (_recertify(me), atls.new_client_identity()):
        doc = issuer.issue(atls_user_data(other.spki_hash), nonce)
        with (
            _channel(running.target, der, other) as channel,
            pytest.raises(grpc.RpcError) as refused,
        ):
            _call_with(channel, kit.echo_method, issuer.variant, doc, nonce)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "this client certificate" in refused.value.details()
    assert running.echo.calls == 0
    # The nonce was never spent: its owner can still use it.
    doc = issuer.issue(atls_user_data(me.spki_hash), nonce)
    with _channel(running.target, der, me) as channel:
        _call_with(channel, kit.echo_method, issuer.variant, doc, nonce)
    assert running.echo.calls == 1


def test_nonce_of_another_server_refused(double, start_server, kit):
    first = start_server(double.issuer(), client_validators=[double.validator()])
    second = start_server(double.issuer(), client_validators=[double.validator()])
    me = atls.new_client_identity()
    issuer = double.issuer()
    with _channel(first.target, atls.fetch_server_certificate(first.target, me), me) as channel:
        nonce = _server_nonce(channel)
    doc = issuer.issue(atls_user_data(me.spki_hash), nonce)
    der = atls.fetch_server_certificate(second.target, me)
    with _channel(second.target, der, me) as channel, pytest.raises(grpc.RpcError) as refused:
        _call_with(channel, kit.echo_method, issuer.variant, doc, nonce)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert second.echo.calls == 0


def test_client_nonce_chosen_by_client_is_refused(double, start_server, kit):
    running = start_server(double.issuer(), client_validators=[double.validator()])
    me = atls.new_client_identity()
    issuer = double.issuer()
    own_nonce = os.urandom(40)
    der = atls.fetch_server_certificate(running.target, me)
    with _channel(running.target, der, me) as channel, pytest.raises(grpc.RpcError) as refused:
        _call_with(
            channel,
            kit.echo_method,
            issuer.variant,
            issuer.issue(atls_user_data(me.spki_hash), own_nonce),
            own_nonce,
        )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert running.echo.calls == 0


def test_replacing_validators_applies_to_new_and_remembered_clients(double, start_server, kit):
    running = start_server(double.issuer(), client_validators=[double.validator()])
    gate = running.server.client_gate
    assert gate is not None
    with atls.connect(
        running.target, [double.validator()], issuer=double.issuer(), timeout=20
    ) as remembered:
        kit.call_echo(remembered.channel)
        gate.set_validators(lambda: [double.wrong_validator()])
        # The remembered client must attest again; its nonce is used up, so it is refused.
        with pytest.raises(grpc.RpcError) as again:
            kit.call_echo(remembered.channel)
    assert again.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with (
        atls.connect(
            running.target, [double.validator()], issuer=double.issuer(), timeout=20
        ) as conn,
        pytest.raises(grpc.RpcError) as refused,
    ):
        kit.call_echo(conn.channel)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert running.echo.calls == 1


def test_issuing_client_needs_a_mutual_server(double, start_server):
    running = start_server(double.issuer())
    with pytest.raises(atls.ATLSHandshakeError, match="server nonce"):
        atls.connect(running.target, [double.validator()], issuer=double.issuer(), timeout=5)


def test_verified_peer_outside_a_call_raises():
    with pytest.raises(atls.ATLSError):
        atls.verified_peer()


def test_large_client_evidence_fits_in_metadata(double, start_server, kit):
    """vTPM documents with long event logs are tens of KiB; gRPC's default limit is 8 KiB."""

    class Padded:
        variant = double.issuer().variant

        def issue(self, user_data: bytes, nonce: bytes) -> bytes:
            document = json.loads(double.issuer().issue(user_data, nonce))
            document["event_log"] = "A" * 200_000
            return json.dumps(document).encode()

    running = start_server(double.issuer(), client_validators=[double.validator()])
    with atls.connect(running.target, [double.validator()], issuer=Padded(), timeout=20) as conn:
        assert kit.call_echo(conn.channel).startswith(ATLS_USER_DATA_LABEL)
    assert running.echo.calls == 1


def test_attest_flood_does_not_displace_a_waiting_clients_nonce(double, start_server, kit):
    """5,000 unauthenticated ``Attest`` calls between a client's handshake and its first call.

    Server nonces are stateless, so the flood has nothing to evict. (The rate bound is lifted
    here so that every flooding call really gets a nonce; with it, most would be refused.)
    """
    running = start_server(
        double.issuer(),
        client_validators=[double.validator()],
        rate_limit=atls.TokenBucket(rate=1e9, burst=10_000),
    )
    me, attacker = atls.new_client_identity(), atls.new_client_identity()
    der = atls.fetch_server_certificate(running.target, me)
    issuer = double.issuer()
    with _channel(running.target, der, me) as channel:
        nonce = _server_nonce(channel)
        doc = issuer.issue(atls_user_data(me.spki_hash), nonce)
        with _channel(running.target, der, attacker) as flood:
            attest = atls_pb2_grpc.HandshakeStub(flood).Attest
            request = atls_pb2.AttestRequest(client_nonce=os.urandom(32))
            flood_nonces = {attest(request, timeout=20).server_nonce for _ in range(5000)}
        assert len(flood_nonces) == 5000
        assert _call_with(channel, kit.echo_method, issuer.variant, doc, nonce) == atls_user_data(
            me.spki_hash
        )
    assert running.echo.calls == 1


def test_unlabelled_client_evidence_refused(double, start_server, kit):
    running = start_server(double.issuer(), client_validators=[double.validator()])
    me = atls.new_client_identity()
    der = atls.fetch_server_certificate(running.target, me)
    issuer = double.issuer()
    with _channel(running.target, der, me) as channel:
        for user_data in (me.spki_hash, VERIFY_USER_DATA_LABEL):
            nonce = _server_nonce(channel)
            with pytest.raises(grpc.RpcError) as refused:
                _call_with(
                    channel, kit.echo_method, issuer.variant, issuer.issue(user_data, nonce), nonce
                )
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "atls.user_data" in refused.value.details()
    assert running.echo.calls == 0


def test_rate_bound_covers_attest_and_client_verification(double, start_server, kit):
    clock = [50.0]
    running = start_server(
        double.issuer(),
        client_validators=[double.validator()],
        rate_limit=atls.TokenBucket(rate=1, burst=2, clock=lambda: clock[0]),
    )
    me = atls.new_client_identity()
    der = atls.fetch_server_certificate(running.target, me)
    issuer = double.issuer()
    with _channel(running.target, der, me) as channel:
        nonce = _server_nonce(channel)  # token 1
        _server_nonce(channel)  # token 2
        with pytest.raises(grpc.RpcError) as limited:
            _server_nonce(channel)
        assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert limited.value.details() == "attestation rate exceeded; retry in 1000 ms"
        # Verifying client evidence draws on the same budget; the nonce is not spent by a
        # refused attempt, so the client can retry once a token is back.
        doc = issuer.issue(atls_user_data(me.spki_hash), nonce)
        with pytest.raises(grpc.RpcError) as limited:
            _call_with(channel, kit.echo_method, issuer.variant, doc, nonce)
        assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert running.echo.calls == 0
        clock[0] += 1
        assert _call_with(channel, kit.echo_method, issuer.variant, doc, nonce)
    assert running.echo.calls == 1


def test_spent_nonce_set_full_fails_closed(double, start_server, kit):
    running = start_server(
        double.issuer(), client_validators=[double.validator()], nonces=atls.NonceStore(capacity=1)
    )
    issuer = double.issuer()
    calls = []
    for _ in range(2):
        me = atls.new_client_identity()
        der = atls.fetch_server_certificate(running.target, me)
        channel = _channel(running.target, der, me)
        nonce = _server_nonce(channel)
        calls.append((channel, issuer.issue(atls_user_data(me.spki_hash), nonce), nonce))
    (first, first_doc, first_nonce), (second, second_doc, second_nonce) = calls
    with first, second:
        _call_with(first, kit.echo_method, issuer.variant, first_doc, first_nonce)
        # One verified nonce fills the set: the next verified client is refused, not let in
        # by forgetting the first nonce (which would make it replayable).
        with pytest.raises(grpc.RpcError) as refused:
            _call_with(second, kit.echo_method, issuer.variant, second_doc, second_nonce)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "retry later" in refused.value.details()
    assert running.echo.calls == 1
