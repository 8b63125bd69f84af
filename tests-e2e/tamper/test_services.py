"""The services' own doors: the KeyService, the VerificationService and the aTLS handshake.

Issue 10 found the KeyService answering anyone (the measurement secret and every disk key over
plain gRPC), the VerificationService quoting any nonce of 1-64 bytes, and the JoinService's
nonce store flushable by unauthenticated handshakes. Each door is tried here the way a process
on the same loopback would.
"""

from __future__ import annotations

import base64
import os
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from cryptography import x509

from constellation.attestation.atls.certificates import new_client_identity
from constellation.attestation.evidence import extra_data
from constellation.attestation.testing.certs import self_signed_pem_pair
from constellation.proto import (
    atls_pb2,
    atls_pb2_grpc,
    kms_pb2,
    kms_pb2_grpc,
    verify_pb2,
    verify_pb2_grpc,
)

from .conftest import RPC_TIMEOUT_S, Attacker, Refusal

pytestmark = [pytest.mark.tamper, pytest.mark.e2e, pytest.mark.slow, pytest.mark.swtpm]

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
#: Handshakes in the flood: the count that flushed the old 4,096-entry nonce store.
FLOOD = 4200
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
INVALID = grpc.StatusCode.INVALID_ARGUMENT


# -- KeyService ----------------------------------------------------------------------------------


def _ask_for_the_measurement_secret(channel: grpc.Channel) -> Refusal:
    stub = kms_pb2_grpc.APIStub(channel)
    request = kms_pb2.GetDataKeyRequest(data_key_id="measurementSecret", length=32)
    return Refusal.of(lambda: stub.GetDataKey(request, timeout=5))


def _keyservice_tls(attacker: Attacker, client: tuple[bytes, bytes] | None) -> grpc.Channel:
    """TLS to the KeyService trusting whatever certificate it shows (the attacker does not
    care who answers), optionally presenting a client certificate of its own."""
    import ssl

    host, port = attacker.keyservice.rsplit(":", 1)
    served = ssl.get_server_certificate((host, int(port)), timeout=RPC_TIMEOUT_S).encode()
    key, chain = client if client is not None else (None, None)
    credentials = grpc.ssl_channel_credentials(served, private_key=key, certificate_chain=chain)
    subject = (
        x509.load_pem_x509_certificate(served)
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value.get_values_for_type(x509.DNSName)[0]
    )
    return grpc.secure_channel(
        attacker.keyservice, credentials, options=[("grpc.ssl_target_name_override", subject)]
    )


def test_keyservice_refuses_plaintext(attacker: Attacker) -> None:
    with grpc.insecure_channel(attacker.keyservice) as channel:
        _ask_for_the_measurement_secret(channel).is_(UNAVAILABLE)


def test_keyservice_refuses_tls_without_a_client_certificate(attacker: Attacker) -> None:
    with _keyservice_tls(attacker, None) as channel:
        _ask_for_the_measurement_secret(channel).is_(UNAVAILABLE)


def test_keyservice_refuses_the_public_atls_client_ca(attacker: Attacker) -> None:
    """The aTLS client CA's key is public by design: its certificates prove nothing here."""
    identity = new_client_identity()
    with _keyservice_tls(attacker, (identity.key_pem, identity.cert_pem)) as channel:
        _ask_for_the_measurement_secret(channel).is_(UNAVAILABLE)


def test_keyservice_refuses_a_self_signed_joinservice_lookalike(attacker: Attacker) -> None:
    with _keyservice_tls(attacker, self_signed_pem_pair("constellation-joinservice")) as channel:
        _ask_for_the_measurement_secret(channel).is_(UNAVAILABLE)


# -- VerificationService ------------------------------------------------------------------------


def _quote(attacker: Attacker, nonce: bytes) -> Refusal:
    target = f"127.0.0.1:{attacker.verification('mini-worker-0')['grpcPort']}"
    with grpc.insecure_channel(target) as channel:
        stub = verify_pb2_grpc.APIStub(channel)
        request = verify_pb2.GetAttestationRequest(nonce=nonce)
        return Refusal.of(lambda: stub.GetAttestation(request, timeout=RPC_TIMEOUT_S))


def _http(attacker: Attacker, query: str) -> int:
    url = f"http://127.0.0.1:{attacker.verification('mini-worker-0')['httpPort']}/{query}"
    try:
        with urllib.request.urlopen(url, timeout=RPC_TIMEOUT_S) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.parametrize(
    "nonce", [b"", b"\x01", b"\x02" * 15, b"\x03" * 65], ids=["empty", "1", "15", "65"]
)
def test_verificationservice_quotes_no_short_or_long_nonce(
    attacker: Attacker, nonce: bytes
) -> None:
    """A 1-byte nonce made the service a quote oracle; now 16..64 bytes or nothing."""
    _quote(attacker, nonce).is_(INVALID, "nonce")


@pytest.mark.parametrize(
    "query",
    ["", "?nonce=", "?nonce=%%%", f"?nonce={base64.urlsafe_b64encode(b'x' * 8).decode()}"],
    ids=["no-nonce", "empty", "not-base64", "8-bytes"],
)
def test_verificationservice_http_refuses_bad_nonces(attacker: Attacker, query: str) -> None:
    assert _http(attacker, query) == 400


def test_verificationservice_evidence_is_labelled_for_verification_only(
    attacker: Attacker,
) -> None:
    """Its quotes bind the VerificationService label: usable for `verify`, never as aTLS."""
    nonce = os.urandom(32)
    _quote(attacker, nonce).is_accepted()
    document = attacker.public_document()
    assert b"constellation/verify/v1" in base64.b64decode(
        __import__("json").loads(document)["user_data"]
    )
    assert extra_data(b"VerifyService", nonce) != extra_data(b"constellation/verify/v1\0", nonce)


# -- the aTLS handshake -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_handshake_refuses_client_nonces_other_than_32_bytes(attacker: Attacker, size: int) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        attacker.raw_session(nonce_size=size)
    assert refused.value.code() == INVALID  # type: ignore[attr-defined]


def test_a_protected_method_without_evidence_is_refused(attacker: Attacker) -> None:
    session = attacker.raw_session()
    try:
        session.join(attacker.request()).is_(UNAUTHENTICATED, "client attestation")
    finally:
        session.close()


def test_a_made_up_server_nonce_is_refused(attacker: Attacker) -> None:
    session = attacker.raw_session()
    try:
        issuer = attacker.insider().issuer()
        nonce = os.urandom(len(session.server_nonce))
        evidence = issuer.issue(session.user_data, nonce)
        session.join(attacker.request(), evidence=evidence, nonce=nonce).is_(
            UNAUTHENTICATED, "nonce"
        )
    finally:
        session.close()


def test_replayed_evidence_and_nonce_buy_nothing_more(attacker: Attacker) -> None:
    """Evidence and nonce captured from a successful join, replayed on a new connection with
    the same client key: the remembered attestation has been spent on its ticket."""
    insider = attacker.insider()
    session = attacker.raw_session()
    try:
        evidence = insider.issuer().issue(session.user_data, session.server_nonce)
        request = attacker.request(insider.name)
        session.join(request, evidence=evidence, nonce=session.server_nonce).is_accepted()
    finally:
        session.close()
    again = attacker.raw_session(client=session.client)
    try:
        replay = again.join(request, evidence=evidence, nonce=session.server_nonce)
        replay.is_(grpc.StatusCode.PERMISSION_DENIED, "attestation.spent")
    finally:
        again.close()


def test_a_spent_nonce_is_refused_to_fresh_evidence(attacker: Attacker) -> None:
    """A nonce whose evidence verified once is spent: new evidence for it (a second machine,
    same client key, so the remembered session does not apply) is refused."""
    first, second = attacker.insider(), attacker.insider()
    client = new_client_identity()
    session = attacker.raw_session(client)
    try:
        evidence = first.issuer().issue(session.user_data, session.server_nonce)
        session.join(
            attacker.request(first.name), evidence=evidence, nonce=session.server_nonce
        ).is_accepted()
    finally:
        session.close()
    other = attacker.raw_session(new_client_identity())
    try:
        evidence = second.issuer().issue(other.user_data, session.server_nonce)
        refusal = other.join(
            attacker.request(second.name), evidence=evidence, nonce=session.server_nonce
        )
        refusal.is_(UNAUTHENTICATED, "nonce")
    finally:
        other.close()


def test_a_nonce_issued_to_another_client_certificate_is_refused(attacker: Attacker) -> None:
    """Nonces are bound to the TLS client certificate of the handshake that got them."""
    victim = attacker.raw_session()
    thief = attacker.raw_session()
    try:
        issuer = attacker.insider().issuer()
        evidence = issuer.issue(thief.user_data, victim.server_nonce)
        thief.join(attacker.request(), evidence=evidence, nonce=victim.server_nonce).is_(
            UNAUTHENTICATED, "nonce"
        )
    finally:
        victim.close()
        thief.close()


def test_an_attest_flood_does_not_cost_a_waiting_node_its_nonce(attacker: Attacker) -> None:
    """4,200 unauthenticated handshakes evicted a waiting node's nonce from the 4,096-entry
    store before. Server nonces are stateless now (MAC-checked, bound to the client key), so
    the same flood leaves nothing to evict; every handshake still costs the flooder a quote,
    and beyond the handshake rate bound it gets RESOURCE_EXHAUSTED (unit-tested; this
    machine's swtpm quotes slower than the bound)."""
    insider = attacker.insider()
    waiting = attacker.raw_session()
    try:
        stub = atls_pb2_grpc.HandshakeStub(waiting.channel)

        def handshake(_: int) -> grpc.StatusCode | None:
            request = atls_pb2.AttestRequest(client_nonce=os.urandom(32))
            return Refusal.of(lambda: stub.Attest(request, timeout=RPC_TIMEOUT_S)).code

        with ThreadPoolExecutor(8) as pool:
            codes = set(pool.map(handshake, range(FLOOD)))
        assert codes <= {None, grpc.StatusCode.RESOURCE_EXHAUSTED}
        evidence = insider.issuer().issue(waiting.user_data, waiting.server_nonce)
        waiting.join(
            attacker.request(insider.name), evidence=evidence, nonce=waiting.server_nonce
        ).is_accepted()
    finally:
        waiting.close()
