"""Bootstrap tokens and the discovery hash: format, Secret shape, settings, no leaks.

That the API server really authenticates such a Secret (and refuses an expired one) is tested
against a live control plane in ``test_bootstrap_token_kube.py``.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes.client.exceptions import ApiException

from constellation.attestation.secret import SecretBytes
from constellation.joinservice.bootstrap_token import (
    DEFAULT_TTL,
    MAX_TTL,
    BootstrapToken,
    BootstrapTokens,
    InvalidCACertificateError,
    MalformedTokenError,
    TokenConfigError,
    discovery_hash,
    generate_token,
    parse_token,
    token_secret,
)
from constellation.joinservice.errors import UpstreamError
from constellation.joinservice.tickets import TokenIssuer

NOW = datetime(2026, 6, 1, 12, 0, 30, 123456, tzinfo=UTC)
TOKEN_FORMAT = re.compile(r"[a-z0-9]{6}\.[a-z0-9]{16}")


def test_generated_tokens_have_the_kubernetes_format_and_differ() -> None:
    tokens = [generate_token() for _ in range(50)]
    for token in tokens:
        assert TOKEN_FORMAT.fullmatch(token.token.reveal().decode())
    assert len({t.token.reveal() for t in tokens}) == 50


def test_token_repr_shows_only_the_id() -> None:
    token = generate_token()
    secret = token.secret.reveal().decode()
    for text in (repr(token), str(token), repr(token.token), f"{token}"):
        assert secret not in text
    assert token.token_id in repr(token)
    assert token.user_name == f"system:bootstrap:{token.token_id}"


def test_parse_round_trip() -> None:
    token = generate_token()
    assert parse_token(token.token) == token


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"abcdef.0123456789abcdeX",  # upper case
        b"abcde.0123456789abcdef0",  # short id
        b"abcdef0123456789abcdef",  # no dot
        b"abcdef.0123456789abcde",  # short secret
        b"abcdef.0123456789abcdef\n",
        "abcdef.0123456789abcdé".encode(),
    ],
)
def test_malformed_tokens_are_refused_without_echo(value: bytes) -> None:
    with pytest.raises(MalformedTokenError) as err:
        parse_token(SecretBytes(value))
    if len(value) > 6:
        assert value[7:].decode(errors="ignore") not in str(err.value)


def test_secret_shape() -> None:
    token = parse_token(SecretBytes(b"abc123.0123456789abcdef"))
    body = token_secret(token, now=NOW)
    assert body["metadata"]["name"] == "bootstrap-token-abc123"
    assert body["metadata"]["namespace"] == "kube-system"
    assert body["type"] == "bootstrap.kubernetes.io/token"
    data = body["stringData"]
    assert data["token-id"] == "abc123"
    assert data["token-secret"] == "0123456789abcdef"
    assert data["usage-bootstrap-authentication"] == "true"
    assert data["auth-extra-groups"] == "system:bootstrappers:kubeadm:default-node-token"
    assert data["expiration"] == "2026-06-01T12:15:30Z"  # RFC 3339, 15 min TTL, UTC
    assert timedelta(minutes=15) == DEFAULT_TTL


@pytest.mark.parametrize("ttl", [timedelta(0), -timedelta(minutes=1), MAX_TTL + timedelta(1)])
def test_ttl_is_bounded(ttl: timedelta) -> None:
    with pytest.raises(TokenConfigError):
        token_secret(generate_token(), now=NOW, ttl=ttl)
    with pytest.raises(TokenConfigError):
        BootstrapTokens(object(), ttl=ttl)


@pytest.mark.parametrize(
    "group", ["system:masters", "system:bootstrappers:", "system:bootstrappers:UP", "nodes"]
)
def test_extra_groups_must_be_bootstrapper_groups(group: str) -> None:
    with pytest.raises(TokenConfigError):
        token_secret(generate_token(), now=NOW, extra_groups=[group])


def test_naive_clock_is_refused() -> None:
    with pytest.raises(TokenConfigError):
        token_secret(generate_token(), now=NOW.replace(tzinfo=None))


def test_bad_token_id_is_refused() -> None:
    token = BootstrapToken(token_id="ABC123", secret=SecretBytes(b"0123456789abcdef"))
    with pytest.raises(MalformedTokenError):
        token_secret(token, now=NOW)


class RecordingCore:
    """A CoreV1Api stand-in for the one failure path a live API server cannot produce on cue:
    a server error whose body echoes the request. It records calls; it does not fake success
    (the success path runs against the real API server in the kube tests)."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.calls = 0

    def create_namespaced_secret(
        self, namespace: str, body: dict[str, object], **_: object
    ) -> None:
        self.calls += 1
        err = ApiException(status=self.status, reason="Internal Server Error")
        err.body = str(body)  # an API error body may quote the request, secret included
        raise err


def test_upstream_error_never_carries_the_secret() -> None:
    fixed = generate_token()
    core = RecordingCore(500)
    tokens: TokenIssuer = BootstrapTokens(core, generate=lambda: fixed)
    with pytest.raises(UpstreamError) as err:
        tokens.create()
    secret = fixed.secret.reveal().decode()
    assert secret not in str(err.value)
    assert err.value.__cause__ is None
    assert err.value.__context__ is not None
    assert secret not in repr(err.value.args)
    assert core.calls == 1


def test_id_collisions_are_retried_a_bounded_number_of_times() -> None:
    core = RecordingCore(409)
    with pytest.raises(UpstreamError, match="collided"):
        BootstrapTokens(core).create()
    assert core.calls == 3


def _ca_pem() -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), key


def test_discovery_hash_is_sha256_of_the_spki() -> None:
    pem, key = _ca_pem()
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert discovery_hash(pem) == "sha256:" + hashlib.sha256(spki).hexdigest()


def test_discovery_hash_depends_on_the_key_only() -> None:
    first, _ = _ca_pem()
    second, _ = _ca_pem()
    assert discovery_hash(first) != discovery_hash(second)


@pytest.mark.parametrize("pem", [b"", b"not a certificate", b"-----BEGIN CERTIFICATE-----\n"])
def test_discovery_hash_rejects_non_certificates(pem: bytes) -> None:
    with pytest.raises(InvalidCACertificateError):
        discovery_hash(pem)
