"""Mutual TLS of the KeyService: only the JoinService gets a data key.

Invariant: ``kms.API/GetDataKey`` is served only over TLS, only to a peer whose certificate

1. chains to the **cluster-internal service CA** (``--client-ca-file``), checked by the TLS
   handshake itself (``require_client_auth=True``); a caller without a certificate, or with one
   from any other CA, never completes the handshake and sees UNAVAILABLE; and
2. names the JoinService (CN :data:`CLIENT_NAME`) and is meant for client authentication (EKU
   clientAuth), checked per call by :class:`CallerInterceptor`; anything else is
   PERMISSION_DENIED with :class:`~constellation.keyservice.errors.UnauthorizedCallerError`.
   (gRPC's TLS library already refuses a client certificate without clientAuth during the
   handshake; the interceptor repeats that so the rule does not rest on a library default.)

Why a CA of its own: the CLI creates it during ``apply``, issues exactly the KeyService's server
certificate and the JoinService's client certificate, and discards its key
(``constellation.cli.servicepki``), so no third identity can ever chain to it. The public aTLS
client CA (``attestation.atls.certificates``) is refused outright as ``--client-ca-file``: its
key is published, anyone can mint a certificate from it. Check 2 keeps even the KeyService's
own server certificate (same CA) from being used as a caller.

Start-up (:func:`load_server_tls`) checks the three files before any port opens and reports
every problem at once, as :class:`~constellation.keyservice.errors.TLSConfigError`. Messages
name files and public certificate fields, never key material.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import grpc
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from constellation.attestation.errors import Failure
from constellation.attestation.service.handlers import Behaviour, BehaviourInterceptor
from constellation.attestation.service.tlsbundle import (
    BundleNames,
    check_tls_bundle,
    extended_key_usages,
    load_certificate,
)
from constellation.keyservice.errors import TLSConfigError, UnauthorizedCallerError

#: The DNS name the KeyService's certificate carries and the JoinService checks
#: (``grpc.ssl_target_name_override``), whatever address it dials.
SERVER_NAME: Final = "constellation-keyservice"
#: The CN of the one caller the KeyService serves.
CLIENT_NAME: Final = "constellation-joinservice"
#: gRPC health stays open to any TLS peer that passed the handshake (the CA check).
HEALTH_PREFIX: Final = "/grpc.health.v1.Health/"


@dataclass(frozen=True, repr=False)
class ServerTLS:
    """The checked TLS material of the KeyService. ``repr`` is redacted (a private key)."""

    cert_pem: bytes
    key_pem: bytes
    client_ca_pem: bytes

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that demand a client certificate chaining to the client CA."""
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)],
            root_certificates=self.client_ca_pem,
            require_client_auth=True,
        )

    def __repr__(self) -> str:
        return "ServerTLS(cert=<pem>, key=<redacted>, client_ca=<pem>)"


def common_name(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else "<no CN>"


def check_server_tls(
    cert_pem: bytes, key_pem: bytes, client_ca_pem: bytes, *, now: datetime.datetime
) -> list[Failure]:
    """Every reason the three files cannot serve the JoinService (empty: they can)."""
    return check_tls_bundle(
        cert_pem,
        key_pem,
        client_ca_pem,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        names=BundleNames(
            "tls.cert", "tls.key", "client_ca", cert_role="tls.crt", ca_role="the client CA"
        ),
        now=now,
    )


def load_server_tls(
    cert_pem: bytes, key_pem: bytes, client_ca_pem: bytes, *, now: datetime.datetime | None = None
) -> ServerTLS:
    """The checked material, or ``TLSConfigError`` listing every failed check."""
    failures = check_server_tls(
        cert_pem, key_pem, client_ca_pem, now=now or datetime.datetime.now(datetime.UTC)
    )
    if failures:
        raise TLSConfigError(failures)
    return ServerTLS(cert_pem=cert_pem, key_pem=key_pem, client_ca_pem=client_ca_pem)


def check_caller(peer_cert_pem: bytes | None) -> list[Failure]:
    """Why the handshake-verified peer certificate is not the JoinService's (empty: it is)."""
    if not peer_cert_pem:
        return [Failure("caller.certificate", "a client certificate", "none")]
    certificate = load_certificate(peer_cert_pem)
    if certificate is None:
        return [Failure("caller.certificate", "a PEM X.509 certificate", "unparsable")]
    failures: list[Failure] = []
    name = common_name(certificate)
    if name != CLIENT_NAME:
        failures.append(Failure("caller.cn", CLIENT_NAME, name))
    if ExtendedKeyUsageOID.CLIENT_AUTH not in extended_key_usages(certificate):
        failures.append(Failure("caller.eku", "clientAuth", "absent"))
    return failures


def peer_certificate(auth_context: Mapping[str, Any]) -> bytes | None:
    """The PEM certificate the TLS handshake verified, from ``ServicerContext.auth_context()``.

    grpcio maps each property to a list of values (grpc-stubs types them as plain ``bytes``).
    """
    certificates: Sequence[bytes] = auth_context.get("x509_pem_cert") or ()
    return bytes(certificates[0]) if certificates else None


class CallerInterceptor(BehaviourInterceptor):
    """Admits a call only when :func:`check_caller` finds nothing (health is exempt)."""

    def around(self, method: str, behaviour: Behaviour) -> Behaviour:
        if method.startswith(HEALTH_PREFIX):
            return behaviour

        def run(request: Any, context: grpc.ServicerContext) -> Any:
            failures = check_caller(peer_certificate(context.auth_context()))
            if failures:
                raise UnauthorizedCallerError(failures)
            return behaviour(request, context)

        return run
