"""aTLS: gRPC channels whose far end proved, by remote attestation, what it runs.

grpcio exposes no certificate-verification callback and no server certificate on the client,
so the attestation cannot ride inside the TLS handshake as in the Go implementation. Instead
TLS authenticates *keys* and a separate, first RPC binds those keys to attestation evidence.

Guarantees (DESIGN.md §5), each covered by a negative test:

- P1: a client sends nothing but the attestation handshake to a server before it has validated
  fresh evidence from that server, bound to the server's TLS key.
- P2: a server that demands client attestation runs no protected method before it has validated
  fresh evidence from that client, bound to the client's TLS key.
- P3: evidence is bound to a nonce chosen by the verifying side and accepted once.
- P4: ``user_data = SHA-256(DER SubjectPublicKeyInfo)`` of the presenting side's TLS key.

The protocol, step by step
--------------------------
Server start (``AttestedServer``):
  S1. Generate an ephemeral ECDSA P-256 key and a self-signed certificate for the DNS name
      ``SERVER_NAME`` (``certificates.new_server_identity``). Nothing trusts this certificate
      by chain; its key is what the evidence will name. Optionally it carries a static
      attestation under the variant's OID for tools to display; it is never trusted (its
      nonce is constant, so it is not fresh).
  S2. Serve TLS with it. A *mutual* server (``client_validators`` given) also demands a client
      certificate chaining to the public aTLS client CA (see ``certificates`` for why that
      CA's key may be public) and installs the client-attestation gate (S5).

Client (``connect(target, validators, issuer=None)``):
  C1. Generate an ephemeral P-256 key and a certificate for it signed by the public client CA.
  C2. Open one plain TLS connection to ``target`` with Python ``ssl`` (bounded by ``timeout``),
      presenting that certificate, and read the server's certificate (DER). No application
      data is sent. Nothing is verified yet.
  C3. Open a gRPC TLS channel whose only trust root is exactly that certificate
      (``root_certificates``, ``grpc.ssl_target_name_override = SERVER_NAME``). Any other
      server key - a different server, or one replaying a copied certificate without its
      private key - fails the TLS handshake, so everything below talks to the holder of the
      pinned key.
  C4. Call ``atls.Handshake/Attest`` with a fresh 32-byte ``client_nonce``.

Server, in ``Attest`` (``HandshakeServicer``):
  S3. Issue evidence over ``user_data = SHA-256(SPKI of the server key)`` and the client's
      nonce (the issuer binds ``SHA-256(user_data || nonce)`` into its hardware evidence).
  S4. A mutual server also draws a fresh 32-byte ``server_nonce``, stores it (single use,
      expiring, bounded store: ``nonces.NonceStore``) and returns it with the evidence.

Client, on the answer:
  C5. Pick the validator for the answer's ``variant``; it must verify the evidence for *our*
      ``client_nonce`` against the trusted measurements, and the verified user data must equal
      ``SHA-256(SPKI of the pinned certificate)``. Otherwise ``ValidationError`` (listing every
      failed check) is raised and the channel is closed: the caller never gets it (P1).
  C6. With an ``issuer`` (mutual): issue the client's evidence over ``SHA-256(SPKI of the
      client key)`` and the ``server_nonce``, and attach ``atls-variant``,
      ``atls-evidence-bin`` and ``atls-nonce-bin`` metadata to every call on the channel.
  C7. Return the channel (``AttestedChannel.channel``) and the server's verified evidence.

Server, on every other call of a mutual server (``ClientAttestationInterceptor``):
  S5. Read the client certificate TLS authenticated from ``auth_context()["x509_pem_cert"]``.
      If a certificate with this exact DER was verified before (and has not expired from the
      bounded cache) it is the same key-holder: let the call through. Otherwise consume the
      metadata nonce (unknown, expired or already used -> UNAUTHENTICATED), verify the
      evidence for that nonce, and require its user data to equal the SPKI hash of the
      client certificate (failure -> PERMISSION_DENIED with the rejection report). Health
      checks and the handshake itself are not gated.
  S6. Run the handler with the verified evidence available through ``verified_peer()``.

Failures surface as typed errors: ``ATLSConnectionError`` (unreachable, TLS failure, timeout),
``ATLSHandshakeError`` (no or malformed answer), ``ValidationError`` /
``MalformedEvidenceError`` (evidence refused), on the server as gRPC status codes.
"""

from constellation.attestation.atls.certificates import (
    CLIENT_CA_CERT_PEM,
    SERVER_NAME,
    TLSIdentity,
    new_client_identity,
    new_server_identity,
    spki_hash,
)
from constellation.attestation.atls.client import (
    AttestedChannel,
    connect,
    connect_pinned,
    fetch_server_certificate,
)
from constellation.attestation.atls.errors import (
    ATLSConnectionError,
    ATLSError,
    ATLSHandshakeError,
)
from constellation.attestation.atls.nonces import NonceStore, VerifiedPeers
from constellation.attestation.atls.server import (
    AttestedServer,
    ClientAttestationInterceptor,
    HandshakeServicer,
    verified_peer,
)

__all__ = [
    "CLIENT_CA_CERT_PEM",
    "SERVER_NAME",
    "ATLSConnectionError",
    "ATLSError",
    "ATLSHandshakeError",
    "AttestedChannel",
    "AttestedServer",
    "ClientAttestationInterceptor",
    "HandshakeServicer",
    "NonceStore",
    "TLSIdentity",
    "VerifiedPeers",
    "connect",
    "connect_pinned",
    "fetch_server_certificate",
    "new_client_identity",
    "new_server_identity",
    "spki_hash",
    "verified_peer",
]
