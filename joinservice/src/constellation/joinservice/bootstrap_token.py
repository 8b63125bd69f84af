"""Kubernetes bootstrap tokens for joining nodes, and the CA discovery hash (DESIGN.md §3).

A bootstrap token ``<id>.<secret>`` (``[a-z0-9]{6}.[a-z0-9]{16}``) lets a joining kubelet
authenticate to the API server as ``system:bootstrap:<id>`` in group ``system:bootstrappers``
(plus the ``auth-extra-groups``). The API server's token authenticator reads it from the Secret
``kube-system/bootstrap-token-<id>`` of type ``bootstrap.kubernetes.io/token`` and refuses it
after its ``expiration`` (RFC 3339); the controller manager's ``tokencleaner`` later deletes the
Secret. Tokens here live 15 minutes by default: long enough to join, short enough to be useless
when leaked later.

Randomness comes from :mod:`secrets`. The token's secret half never appears in a ``repr``, a log
line or an error message; it travels in :class:`~constellation.attestation.secret.SecretBytes`.
The token *id* is public (it is the user name and the Secret's name) and may be logged.

The discovery hash pins the cluster CA for a joining node the way ``kubeadm join
--discovery-token-ca-cert-hash`` does: ``sha256:<hex SHA-256 of the CA cert's SPKI DER>``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from constellation.attestation.secret import SecretBytes
from constellation.joinservice.errors import (
    ConfigError,
    InvalidRequestError,
    JoinServiceError,
    UpstreamError,
)
from constellation.joinservice.tickets import IssuedToken

TOKEN_ALPHABET: Final = "abcdefghijklmnopqrstuvwxyz0123456789"  # noqa: S105 - alphabet
TOKEN_ID_LENGTH: Final = 6
TOKEN_SECRET_LENGTH: Final = 16
DEFAULT_TTL: Final = timedelta(minutes=15)
MAX_TTL: Final = timedelta(hours=24)
NAMESPACE: Final = "kube-system"
SECRET_PREFIX: Final = "bootstrap-token-"  # noqa: S105 - object name
SECRET_TYPE: Final = "bootstrap.kubernetes.io/token"  # noqa: S105 - Secret type
BOOTSTRAPPERS_GROUP: Final = "system:bootstrappers"
DEFAULT_EXTRA_GROUPS: Final = ("system:bootstrappers:kubeadm:default-node-token",)
USAGES: Final = ("authentication", "signing")
REQUEST_TIMEOUT: Final = 10.0
#: A fresh id collides with an existing token with probability ~n/36^6; retry a few times.
CREATE_ATTEMPTS: Final = 3
_TOKEN = re.compile(r"([a-z0-9]{6})\.([a-z0-9]{16})")
_TOKEN_ID = re.compile(r"[a-z0-9]{6}")
# k8s.io/cluster-bootstrap/token/api: BootstrapGroupPattern
_EXTRA_GROUP = re.compile(r"system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]")


class BootstrapTokenError(JoinServiceError):
    """Root of the bootstrap-token errors."""


class MalformedTokenError(BootstrapTokenError, InvalidRequestError):
    """A token string is not ``[a-z0-9]{6}.[a-z0-9]{16}`` (the value is never echoed)."""


class TokenConfigError(BootstrapTokenError, ConfigError):
    """TTL or extra groups are outside what the API server accepts or what we allow."""


class InvalidCACertificateError(JoinServiceError):
    """The cluster CA certificate given for the discovery hash is not PEM X.509."""


@dataclass(frozen=True)
class BootstrapToken:
    """A token split into its public id and its secret half (``repr`` shows the id only)."""

    token_id: str
    secret: SecretBytes

    @property
    def token(self) -> SecretBytes:
        """The full ``<id>.<secret>`` value, still wrapped."""
        return SecretBytes(self.token_id.encode() + b"." + self.secret.reveal())

    @property
    def user_name(self) -> str:
        """The identity the API server gives a request carrying this token."""
        return f"system:bootstrap:{self.token_id}"


def _random_string(length: int) -> str:
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(length))


def generate_token() -> BootstrapToken:
    """A fresh token from the ``secrets`` CSPRNG (~82 bits of secret)."""
    return BootstrapToken(
        token_id=_random_string(TOKEN_ID_LENGTH),
        secret=SecretBytes(_random_string(TOKEN_SECRET_LENGTH).encode()),
    )


def parse_token(value: SecretBytes) -> BootstrapToken:
    """Split a token; raise :class:`MalformedTokenError` without quoting the value."""
    try:
        text = value.reveal().decode("ascii")
    except UnicodeDecodeError:
        raise MalformedTokenError("bootstrap token is not ASCII") from None
    match = _TOKEN.fullmatch(text)
    if match is None:
        raise MalformedTokenError(
            f"bootstrap token has the wrong format (length {len(text)}); expected "
            f"{TOKEN_ID_LENGTH} then '.' then {TOKEN_SECRET_LENGTH} characters of [a-z0-9]"
        )
    return BootstrapToken(token_id=match.group(1), secret=SecretBytes(match.group(2).encode()))


def check_token_settings(ttl: timedelta, extra_groups: Sequence[str]) -> None:
    """Reject a TTL outside (0, MAX_TTL] and groups the API server would refuse."""
    if not timedelta(0) < ttl <= MAX_TTL:
        raise TokenConfigError(f"bootstrap token TTL must be in (0, {MAX_TTL}], got {ttl}")
    for group in extra_groups:
        if not _EXTRA_GROUP.fullmatch(group):
            raise TokenConfigError(
                f"extra group {group!r} must match system:bootstrappers:[a-z0-9:-]*[a-z0-9]"
            )


def token_secret(
    token: BootstrapToken,
    *,
    now: datetime,
    ttl: timedelta = DEFAULT_TTL,
    extra_groups: Sequence[str] = DEFAULT_EXTRA_GROUPS,
    description: str = "Constellation JoinService: node join",
) -> dict[str, Any]:
    """The ``bootstrap-token-<id>`` Secret as an API object body (pure: the clock is passed in).

    The result contains the secret; hand it straight to the API client and do not log it.
    """
    check_token_settings(ttl, extra_groups)
    if not _TOKEN_ID.fullmatch(token.token_id):
        raise MalformedTokenError("bootstrap token id must be 6 characters of [a-z0-9]")
    if now.tzinfo is None:
        raise TokenConfigError("the token clock must be timezone-aware (UTC)")
    expiration = (now + ttl).astimezone(UTC).replace(microsecond=0)
    data: dict[str, str] = {
        "description": description,
        "token-id": token.token_id,
        "token-secret": token.secret.reveal().decode("ascii"),
        "expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    for usage in USAGES:
        data[f"usage-bootstrap-{usage}"] = "true"
    if extra_groups:
        data["auth-extra-groups"] = ",".join(extra_groups)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": SECRET_PREFIX + token.token_id,
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/managed-by": "constellation-joinservice"},
        },
        "type": SECRET_TYPE,
        "stringData": data,
    }


class BootstrapTokens:
    """The JoinService's ``TokenIssuer``: creates short-lived tokens through the API.

    ``core`` is a ``kubernetes.client.CoreV1Api``; the caller owns its configuration.
    """

    def __init__(
        self,
        core: Any,
        *,
        ttl: timedelta = DEFAULT_TTL,
        extra_groups: Sequence[str] = DEFAULT_EXTRA_GROUPS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        generate: Callable[[], BootstrapToken] = generate_token,
    ) -> None:
        check_token_settings(ttl, extra_groups)
        self._core = core
        self._ttl = ttl
        self._extra_groups = tuple(extra_groups)
        self._clock = clock
        self._generate = generate

    def create_token(self) -> BootstrapToken:
        """Create a fresh token's Secret; retry only on an id collision (bounded)."""
        for _ in range(CREATE_ATTEMPTS):
            token = self._generate()
            body = token_secret(
                token, now=self._clock(), ttl=self._ttl, extra_groups=self._extra_groups
            )
            try:
                self._core.create_namespaced_secret(
                    NAMESPACE, body, _request_timeout=REQUEST_TIMEOUT
                )
            except ApiException as err:
                if err.status == 409:
                    continue  # id collision with a live token: draw a new one
                # err.body may echo the request (and with it the secret): never include it.
                raise UpstreamError(
                    f"creating bootstrap token {token.token_id} failed: HTTP {err.status} "
                    f"{err.reason}"
                ) from None
            except (HTTPError, OSError) as err:
                raise UpstreamError(
                    f"creating bootstrap token {token.token_id} failed: {type(err).__name__}"
                ) from None
            return token
        raise UpstreamError(f"{CREATE_ATTEMPTS} fresh bootstrap token ids all collided")

    def create(self) -> IssuedToken:
        """``TokenIssuer`` protocol of :mod:`constellation.joinservice.tickets`."""
        token = self.create_token()
        return IssuedToken(token_id=token.token_id, token=token.token)


def discovery_hash(ca_cert_pem: bytes) -> str:
    """``sha256:<hex SHA-256 of the CA certificate's SubjectPublicKeyInfo DER>``."""
    try:
        certificate = x509.load_pem_x509_certificate(ca_cert_pem)
    except ValueError as err:
        raise InvalidCACertificateError(f"cluster CA certificate is not PEM X.509: {err}") from None
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(spki).hexdigest()
