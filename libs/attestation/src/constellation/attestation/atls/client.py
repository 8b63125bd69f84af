"""The client side of aTLS: fetch, pin, attest, then hand out the channel.

``connect(target, validators)`` returns a gRPC channel only after the server proved fresh
evidence bound to the key of the very certificate the channel is pinned to (P1, P3, P4). With
``issuer=...`` the channel also attaches the client's own evidence to every call (mutual).
"""

from __future__ import annotations

import os
import socket
import ssl
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from constellation.attestation.atls.certificates import (
    SERVER_NAME,
    TLSIdentity,
    new_client_identity,
    spki_hash_of_der,
)
from constellation.attestation.atls.errors import (
    ATLSConnectionError,
    ATLSError,
    ATLSHandshakeError,
)
from constellation.attestation.atls.protocol import (
    CLIENT_NONCE_SIZE,
    GRPC_OPTIONS,
    METADATA_EVIDENCE,
    METADATA_NONCE,
    METADATA_VARIANT,
    SERVER_NONCE_SIZE,
    atls_user_data,
    verify_peer_evidence,
)
from constellation.attestation.evidence import Issuer, Validator, VerifiedEvidence
from constellation.proto import atls_pb2, atls_pb2_grpc

DEFAULT_TIMEOUT = 10.0


def split_target(target: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); raises ``ATLSError`` otherwise."""
    host, sep, port_text = target.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ATLSError(f"aTLS target must be host:port, got {target!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


def fetch_server_certificate(
    target: str, client: TLSIdentity, *, timeout: float = DEFAULT_TIMEOUT
) -> bytes:
    """DER certificate of the server at ``target``, from one plain TLS handshake.

    Nothing is verified here and nothing but the handshake is sent: the certificate is only
    pinned for the gRPC channel, and its key is trusted once the server's evidence names it.
    The client identity is presented because a mutual server demands one.
    """
    host, port = split_target(target)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # trust comes from attestation, see docstring
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="atls-") as scratch:
        # ssl loads keys from files only; the directory is private (0700) and removed at once.
        cert_path, key_path = Path(scratch, "cert.pem"), Path(scratch, "key.pem")
        cert_path.write_bytes(client.cert_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as key_file:
            key_file.write(client.key_pem)
        context.load_cert_chain(cert_path, key_path)
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=SERVER_NAME) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise ATLSConnectionError(f"aTLS: TLS handshake with {target} failed: {exc}") from exc
    if not der:
        raise ATLSConnectionError(f"aTLS: {target} presented no certificate")
    return der


class _EvidenceMetadata(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Attaches the client's evidence to every call (the server verifies it once per key)."""

    def __init__(self, variant: str, document: bytes, server_nonce: bytes) -> None:
        self._metadata = (
            (METADATA_VARIANT, variant),
            (METADATA_EVIDENCE, document),
            (METADATA_NONCE, server_nonce),
        )

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(
            method=details.method,
            timeout=details.timeout,
            metadata=[*(details.metadata or ()), *self._metadata],
            credentials=details.credentials,
            wait_for_ready=getattr(details, "wait_for_ready", None),
            compression=getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request_iterator)


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


@dataclass(frozen=True)
class AttestedChannel:
    """A gRPC channel to an attested server, with what was verified about it.

    Use ``.channel`` for stubs; closing this object closes the channel.
    """

    channel: grpc.Channel
    server: VerifiedEvidence
    server_certificate: bytes

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> AttestedChannel:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def connect(
    target: str,
    validators: Sequence[Validator],
    *,
    issuer: Issuer | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> AttestedChannel:
    """Open an attested channel to ``target`` (``host:port``); see the package docstring.

    Raises ``ATLSConnectionError`` (unreachable, TLS failure, timeout), ``ATLSHandshakeError``
    (no or malformed answer), ``ValidationError`` / ``MalformedEvidenceError`` (evidence
    refused); on any of them the channel is closed and nothing else was sent.
    """
    client = new_client_identity()
    certificate = fetch_server_certificate(target, client, timeout=timeout)
    return connect_pinned(
        target, certificate, validators, issuer=issuer, timeout=timeout, client=client
    )


def connect_pinned(
    target: str,
    server_certificate: bytes,
    validators: Sequence[Validator],
    *,
    issuer: Issuer | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    client: TLSIdentity | None = None,
) -> AttestedChannel:
    """Steps C3-C7 of :func:`connect` for an already fetched (DER) server certificate."""
    if not validators:
        raise ATLSError("aTLS needs at least one validator for the server's evidence")
    client = client or new_client_identity()
    server_user_data = atls_user_data(spki_hash_of_der(server_certificate))
    pem = x509.load_der_x509_certificate(server_certificate).public_bytes(
        serialization.Encoding.PEM
    )
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pem,
        private_key=client.key_pem,
        certificate_chain=client.cert_pem,
    )
    channel = grpc.secure_channel(
        target,
        credentials,
        options=[("grpc.ssl_target_name_override", SERVER_NAME), *GRPC_OPTIONS],
    )
    try:
        return _attest(
            target,
            channel,
            server_certificate,
            server_user_data,
            validators,
            issuer,
            client,
            timeout,
        )
    except BaseException:
        channel.close()
        raise


def _attest(
    target: str,
    channel: grpc.Channel,
    server_certificate: bytes,
    server_user_data: bytes,
    validators: Sequence[Validator],
    issuer: Issuer | None,
    client: TLSIdentity,
    timeout: float,
) -> AttestedChannel:
    client_nonce = os.urandom(CLIENT_NONCE_SIZE)
    # A fail-fast call (no wait_for_ready) waits for the first connection attempt and fails
    # with UNAVAILABLE if TLS fails (e.g. a key other than the pinned one) instead of retrying
    # until the deadline. (``channel_ready_future`` is avoided: its polling thread makes
    # ``close()`` block for ~200 ms.)
    try:
        answer = atls_pb2_grpc.HandshakeStub(channel).Attest(
            atls_pb2.AttestRequest(client_nonce=client_nonce), timeout=timeout
        )
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise ATLSConnectionError(
                f"aTLS: no attestation handshake with {target} within {timeout:g}s "
                f"(unreachable, or it presented a certificate other than the pinned one): "
                f"{code.name}: {details}"
            ) from exc
        raise ATLSHandshakeError(
            f"aTLS: attestation handshake with {target} failed: {code}: {details}"
        ) from exc
    if not answer.attestation:
        raise ATLSHandshakeError(f"aTLS: {target} presented no evidence")
    server = verify_peer_evidence(
        validators,
        variant=answer.variant,
        document=answer.attestation,
        nonce=client_nonce,
        expected_user_data=server_user_data,
        subject=f"aTLS server {target}",
    )
    if issuer is not None:
        if len(answer.server_nonce) != SERVER_NONCE_SIZE:
            raise ATLSHandshakeError(
                f"aTLS: {target} sent a server nonce of {len(answer.server_nonce)} bytes, "
                f"expected {SERVER_NONCE_SIZE} (is it a mutual aTLS server?)"
            )
        document = issuer.issue(atls_user_data(client.spki_hash), answer.server_nonce)
        channel = grpc.intercept_channel(
            channel, _EvidenceMetadata(issuer.variant, document, answer.server_nonce)
        )
    return AttestedChannel(channel=channel, server=server, server_certificate=server_certificate)
