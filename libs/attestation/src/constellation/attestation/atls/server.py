"""The server side of aTLS: the handshake servicer, the client-attestation gate, the builder.

See the package docstring for the protocol. ``AttestedServer`` is what services use::

    server = AttestedServer(issuer, client_validators=[validator])
    join_pb2_grpc.add_APIServicer_to_server(servicer, server.grpc_server)
    server.add_port("0.0.0.0:9090"); server.start()

Handlers of a mutual server call :func:`verified_peer` to learn who is calling, and
:func:`claim_attestation` before handing out anything that one attestation may buy only once.
"""

from __future__ import annotations

import contextvars
import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from typing import Any

import grpc
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from constellation.attestation.atls.certificates import (
    CLIENT_CA_CERT_PEM,
    INSPECTION_NONCE,
    TLSIdentity,
    new_server_identity,
    spki_hash,
)
from constellation.attestation.atls.errors import (
    ATLSError,
    NonceCapacityError,
    NonceRefusedError,
    RateLimitedError,
)
from constellation.attestation.atls.nonces import (
    AttestationSession,
    NonceStore,
    VerifiedPeers,
)
from constellation.attestation.atls.protocol import (
    CLIENT_NONCE_SIZE,
    GRPC_OPTIONS,
    HANDSHAKE_METHOD,
    METADATA_EVIDENCE,
    METADATA_NONCE,
    METADATA_VARIANT,
    atls_user_data,
    verify_peer_evidence,
)
from constellation.attestation.atls.ratelimit import TokenBucket
from constellation.attestation.errors import (
    ConstellationError,
    MalformedEvidenceError,
    ValidationError,
)
from constellation.attestation.evidence import Issuer, Validator, VerifiedEvidence
from constellation.attestation.service.status import ErrorStatusInterceptor
from constellation.attestation.variants import get_variant
from constellation.proto import atls_pb2, atls_pb2_grpc

_log = structlog.get_logger("constellation.atls")

#: Methods a mutual server serves without client evidence: the handshake itself (it is how a
#: client obtains the nonce to attest to) and gRPC health checks (they reveal nothing).
DEFAULT_UNPROTECTED_METHODS: frozenset[str] = frozenset(
    {HANDSHAKE_METHOD, "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"}
)

_PEER: contextvars.ContextVar[AttestationSession | None] = contextvars.ContextVar(
    "atls_verified_peer", default=None
)

ValidatorSource = Sequence[Validator] | Callable[[], Sequence[Validator]]


def verified_peer() -> VerifiedEvidence:
    """The verified evidence of the client of the current call on a mutual aTLS server.

    Raises ``ATLSError`` outside such a call, so a handler cannot mistake "no peer" for a peer.
    """
    return _session().evidence


def claim_attestation(purpose: str) -> bool:
    """Spend the current peer's attestation on ``purpose``: True once, False ever after.

    A remembered verdict lets a client keep calling over new connections with the same key;
    it must not let one attestation mint a second join ticket. Handlers call this before they
    create anything countable; the client has to attest afresh (a new key, a new nonce) to
    claim the same purpose again. Raises ``ATLSError`` outside a call on a mutual server.
    """
    return _session().claim(purpose)


def _session() -> AttestationSession:
    session = _PEER.get()
    if session is None:
        raise ATLSError("no attested peer: not inside a call on a mutual aTLS server")
    return session


def _client_certificate(context: grpc.ServicerContext) -> tuple[x509.Certificate, bytes] | None:
    """The client certificate TLS authenticated on this call and the SHA-256 of its DER."""
    presented: object = context.auth_context().get("x509_pem_cert") or []
    certs = [c for c in presented if isinstance(c, bytes)] if isinstance(presented, list) else []
    if not certs:
        return None
    try:
        certificate = x509.load_pem_x509_certificate(certs[0])
    except ValueError:
        return None
    der = certificate.public_bytes(serialization.Encoding.DER)
    return certificate, hashlib.sha256(der).digest()


def _refuse_rate(context: grpc.ServicerContext, limit: TokenBucket) -> None:
    try:
        limit.acquire()
    except RateLimitedError as exc:
        _log.warning("atls.rate_limited", retry_after_ms=round(exc.retry_after * 1000))
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))


class HandshakeServicer(atls_pb2_grpc.HandshakeServicer):
    """Serves ``atls.Handshake/Attest``: evidence over (our labelled SPKI hash, the client's
    nonce), and on a mutual server a nonce bound to the caller's client certificate.
    """

    def __init__(
        self,
        issuer: Issuer,
        identity: TLSIdentity,
        nonces: NonceStore | None,
        rate_limit: TokenBucket | None = None,
    ) -> None:
        self._issuer = issuer
        self._user_data = atls_user_data(identity.spki_hash)
        self._nonces = nonces
        self._rate_limit = rate_limit if rate_limit is not None else TokenBucket()
        # A TPM (no resource manager) serves one command sequence at a time.
        self._issue_lock = threading.Lock()

    def Attest(
        self, request: atls_pb2.AttestRequest, context: grpc.ServicerContext
    ) -> atls_pb2.AttestResponse:
        if len(request.client_nonce) != CLIENT_NONCE_SIZE:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"client_nonce must be exactly {CLIENT_NONCE_SIZE} bytes, "
                f"got {len(request.client_nonce)}",
            )
        _refuse_rate(context, self._rate_limit)
        server_nonce = b""
        if self._nonces is not None:
            client = _client_certificate(context)
            if client is None:  # TLS demands a certificate on a mutual server; be explicit
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "aTLS: no client certificate")
            server_nonce = self._nonces.issue(client[1])
        try:
            with self._issue_lock:
                document = self._issuer.issue(self._user_data, request.client_nonce)
        except ConstellationError as exc:
            _log.error("atls.issue_failed", variant=self._issuer.variant, error=str(exc))
            context.abort(grpc.StatusCode.UNAVAILABLE, "attestation evidence could not be issued")
        return atls_pb2.AttestResponse(
            variant=self._issuer.variant, attestation=document, server_nonce=server_nonce
        )


class ClientAttestationInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Runs a protected method only for a client that proved fresh evidence bound to its key.

    The gate wraps each handler, so it runs in the handler's thread with the servicer context,
    where ``auth_context()`` exposes the client certificate TLS authenticated (P2).
    """

    def __init__(
        self,
        validators: ValidatorSource,
        nonces: NonceStore,
        peers: VerifiedPeers,
        unprotected_methods: frozenset[str] = DEFAULT_UNPROTECTED_METHODS,
        rate_limit: TokenBucket | None = None,
    ) -> None:
        self._validators = validators
        self._nonces = nonces
        self._peers = peers
        self._unprotected = unprotected_methods
        self._rate_limit = rate_limit if rate_limit is not None else TokenBucket()

    def set_validators(self, validators: ValidatorSource) -> None:
        """Replace the validators (e.g. after new measurements were published).

        Clients verified under the old validators must attest again. (A callable source is
        consulted for every new piece of evidence; clients already remembered keep their
        verdict until it expires, so call this when the trusted inputs change.)
        """
        self._validators = validators
        self._peers.forget_all()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method in self._unprotected:
            return handler
        return _gate_handler(handler, self._authenticate)

    def _current_validators(self) -> Sequence[Validator]:
        source = self._validators
        return source() if callable(source) else source

    def _authenticate(self, context: grpc.ServicerContext) -> AttestationSession:
        client = _client_certificate(context)
        if client is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "aTLS: no usable client certificate")
        certificate, fingerprint = client
        known = self._peers.lookup(fingerprint)
        if known is not None:
            return known

        metadata = _metadata(context)
        variant = metadata.get(METADATA_VARIANT)
        document = metadata.get(METADATA_EVIDENCE)
        nonce = metadata.get(METADATA_NONCE)
        if not isinstance(document, bytes) or not isinstance(nonce, bytes) or variant is None:
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "aTLS: this method needs client attestation; connect with an issuer",
            )
        try:
            self._nonces.check(nonce, fingerprint)
        except NonceRefusedError as exc:
            _log.warning("atls.client_refused", reason=str(exc))
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        # Verifying evidence is the costly part of this unauthenticated path: same budget.
        _refuse_rate(context, self._rate_limit)
        try:
            evidence = verify_peer_evidence(
                self._current_validators(),
                variant=str(variant),
                document=document,
                nonce=nonce,
                expected_user_data=atls_user_data(spki_hash(certificate)),
                subject="aTLS client",
            )
        except ValidationError as exc:
            _log.warning("atls.client_refused", variant=str(variant), report=exc.to_dict())
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except MalformedEvidenceError as exc:
            _log.warning("atls.client_refused", variant=str(variant), error=str(exc))
            context.abort(grpc.StatusCode.UNAUTHENTICATED, f"aTLS: {exc}")
        try:
            self._nonces.spend(nonce)
        except NonceRefusedError as exc:  # a concurrent call spent it first
            _log.warning("atls.client_refused", reason=str(exc))
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        except NonceCapacityError as exc:
            _log.error("atls.nonce_capacity", error=str(exc))
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        session = self._peers.remember(fingerprint, evidence)
        _log.info("atls.client_verified", variant=evidence.variant, warnings=len(evidence.warnings))
        return session


def _metadata(context: grpc.ServicerContext) -> dict[str, str | bytes]:
    # grpc yields _Metadatum(key, value) named tuples; index access works for both shapes.
    return {str(item[0]): item[1] for item in context.invocation_metadata()}


def _gate_handler(
    handler: grpc.RpcMethodHandler[Any, Any],
    authenticate: Callable[[grpc.ServicerContext], AttestationSession],
) -> grpc.RpcMethodHandler[Any, Any]:
    """Wrap ``handler`` so ``authenticate`` runs first and its result is the call's peer."""

    def unary_response(behaviour: Callable[..., Any]) -> Callable[..., Any]:
        def run(request: Any, context: grpc.ServicerContext) -> Any:
            peer = authenticate(context)
            token = _PEER.set(peer)
            try:
                return behaviour(request, context)
            finally:
                _PEER.reset(token)

        return run

    def stream_response(behaviour: Callable[..., Any]) -> Callable[..., Any]:
        def run(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            peer = authenticate(context)

            def responses() -> Iterator[Any]:
                token = _PEER.set(peer)
                try:
                    yield from behaviour(request, context)
                finally:
                    _PEER.reset(token)

            return responses()

        return run

    kinds = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary), **kinds)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(unary_response(handler.stream_unary), **kinds)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream_response(handler.unary_stream), **kinds)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            stream_response(handler.stream_stream), **kinds
        )
    return handler


def _inspection_evidence(issuer: Issuer) -> Callable[[bytes], tuple[str, bytes]]:
    def evidence(spki_hash: bytes) -> tuple[str, bytes]:
        oid = get_variant(issuer.variant).oid
        return oid, issuer.issue(atls_user_data(spki_hash), INSPECTION_NONCE)

    return evidence


class AttestedServer:
    """A grpc server that attests itself (and, if ``client_validators`` is given, its clients).

    ``interceptors`` run before the client-attestation gate, so metrics and error mapping see
    refused calls too. ``embed_inspection_attestation`` puts a static, non-fresh attestation
    into the certificate for tools to display (``certificates.new_server_identity``).
    ``rate_limit`` bounds the unauthenticated attestation work (``Attest`` calls and client
    evidence verifications together; default 200/s, burst 400): beyond it callers get
    RESOURCE_EXHAUSTED with the wait in milliseconds.
    """

    def __init__(
        self,
        issuer: Issuer,
        *,
        client_validators: ValidatorSource | None = None,
        max_workers: int = 8,
        interceptors: Sequence[grpc.ServerInterceptor[Any, Any]] = (),
        options: Sequence[tuple[str, Any]] = (),
        unprotected_methods: frozenset[str] = DEFAULT_UNPROTECTED_METHODS,
        nonces: NonceStore | None = None,
        peers: VerifiedPeers | None = None,
        identity: TLSIdentity | None = None,
        embed_inspection_attestation: bool = False,
        rate_limit: TokenBucket | None = None,
    ) -> None:
        if identity is None:
            identity = new_server_identity(
                inspection_evidence=_inspection_evidence(issuer)
                if embed_inspection_attestation
                else None
            )
        self.identity = identity
        self.mutual = client_validators is not None
        # (``is None``, not ``or``: an empty store is falsy)
        self._nonces = (nonces if nonces is not None else NonceStore()) if self.mutual else None
        self.rate_limit = rate_limit if rate_limit is not None else TokenBucket()
        chain = list(interceptors)
        if not any(isinstance(i, ErrorStatusInterceptor) for i in chain):
            # Every attested server answers undecodable requests with INVALID_ARGUMENT and
            # hides unexpected errors (``service.status``), even without an error table.
            chain.append(ErrorStatusInterceptor())
        self.client_gate: ClientAttestationInterceptor | None = None
        if client_validators is not None and self._nonces is not None:
            self.client_gate = ClientAttestationInterceptor(
                client_validators,
                self._nonces,
                peers or VerifiedPeers(),
                unprotected_methods,
                self.rate_limit,
            )
            chain.append(self.client_gate)
        self.grpc_server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=chain,
            options=[*GRPC_OPTIONS, *options],
        )
        atls_pb2_grpc.add_HandshakeServicer_to_server(
            HandshakeServicer(issuer, self.identity, self._nonces, self.rate_limit),
            self.grpc_server,
        )

    def credentials(self) -> grpc.ServerCredentials:
        """TLS with our ephemeral identity; mutual servers demand a client-CA-signed cert."""
        pair = [(self.identity.key_pem, self.identity.cert_pem)]
        if self.mutual:
            return grpc.ssl_server_credentials(
                pair, root_certificates=CLIENT_CA_CERT_PEM, require_client_auth=True
            )
        return grpc.ssl_server_credentials(pair)

    def add_port(self, address: str) -> int:
        """Listen on ``address`` (``host:port``, port 0 picks one); returns the bound port."""
        try:
            port = self.grpc_server.add_secure_port(address, self.credentials())
        except RuntimeError as exc:  # grpcio reports bind and key/certificate errors so
            port = 0
            reason = str(exc)
        else:
            reason = "address in use or invalid"
        if port == 0:
            raise ATLSError(
                f"aTLS server could not listen on {address} ({reason}); the TLS key must match "
                "its certificate"
            )
        return port

    def start(self) -> None:
        self.grpc_server.start()

    def stop(self, grace: float | None = None) -> threading.Event:
        return self.grpc_server.stop(grace)
