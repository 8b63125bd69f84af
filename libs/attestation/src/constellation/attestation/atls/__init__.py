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
- P4: ``user_data = ATLS_USER_DATA_LABEL || SHA-256(DER SubjectPublicKeyInfo)`` of the
  presenting side's TLS key (``protocol.atls_user_data``; the label
  ``b"constellation/atls/v1\\0"`` keeps aTLS evidence and VerificationService evidence apart).

Every variant binds ``extra_data(user_data, nonce)`` into its hardware evidence:
``SHA-256(b"constellation/evidence/v1\\0" || u32be(len(user_data)) || user_data ||
u32be(len(nonce)) || nonce)`` (``constellation.attestation.evidence``): domain-separated from
other signed hashes and length-framed, so no other (user data, nonce) split of the same bytes
verifies.

Threat model
------------
A network attacker may read, drop, delay, replay and inject any traffic, reach every port, run
its own TLS endpoints with self-made keys and certificates (the client CA's key is public), and
ask any server for evidence as often as the rate bound allows. It can *not*: make a client talk
to a server whose evidence for the client's fresh nonce does not name the pinned TLS key (P1);
run a protected method without evidence, bound to its own TLS key, over a nonce the server
issued to that very client certificate within the last two minutes and never accepted before
(P2, P3) - replaying evidence, relaying it to another server, or moving a nonce to another
certificate all fail; present VerificationService evidence (or any other purpose's) as aTLS
evidence (P4, labels); or exhaust server state - server nonces are stateless (an HMAC under a
per-process key), only nonces of *verified* evidence are remembered, and issuing or checking
evidence costs a token from a global bucket (RESOURCE_EXHAUSTED, "retry in N ms"). What it
can do is deny service: drop traffic, or spend the rate budget so that legitimate clients are
delayed (they retry with backoff). Attestation proves what software holds a key, not who
operates the machine: platform identity is the validators' business (AK certificates).

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
  C4. Call ``atls.Handshake/Attest`` with a fresh ``client_nonce`` of exactly 32 bytes
      (``protocol.CLIENT_NONCE_SIZE``; the server refuses any other length).

Server, in ``Attest`` (``HandshakeServicer``):
  S3. Take a token from the rate bucket (``ratelimit.TokenBucket``; empty ->
      RESOURCE_EXHAUSTED "attestation rate exceeded; retry in N ms"), then issue evidence over
      ``user_data = atls_user_data(SHA-256(SPKI of the server key))`` and the client's nonce.
  S4. A mutual server also returns a ``server_nonce`` of exactly 40 bytes
      (``protocol.SERVER_NONCE_SIZE``): ``random(16) || expiry u64be || HMAC-SHA256(key,
      random || expiry || SHA-256(DER client certificate of this call))[:16]``
      (``nonces.NonceStore.issue``). The server stores nothing, so no flood of ``Attest``
      calls can displace the nonce another client is about to use.

Client, on the answer:
  C5. Pick the validator for the answer's ``variant``; it must verify the evidence for *our*
      ``client_nonce`` against the trusted measurements, and the verified user data must equal
      ``atls_user_data(SHA-256(SPKI of the pinned certificate))``. Otherwise
      ``ValidationError`` (listing every failed check) is raised and the channel is closed:
      the caller never gets it (P1).
  C6. With an ``issuer`` (mutual): require a 40-byte ``server_nonce``, issue the client's
      evidence over ``atls_user_data(SHA-256(SPKI of the client key))`` and it, and attach
      ``atls-variant``, ``atls-evidence-bin`` and ``atls-nonce-bin`` metadata to every call on
      the channel (which keeps presenting the client certificate the nonce is bound to).
  C7. Return the channel (``AttestedChannel.channel``) and the server's verified evidence.

Server, on every other call of a mutual server (``ClientAttestationInterceptor``):
  S5. Read the client certificate TLS authenticated from ``auth_context()["x509_pem_cert"]``.
      If a certificate with this exact DER was verified before (and has not expired from the
      bounded cache) it is the same key-holder: let the call through. Otherwise check the
      metadata nonce (``NonceStore.check``: its tag recomputed for *this* call's certificate,
      not expired, not spent; else UNAUTHENTICATED), take a rate token, verify the evidence
      for that nonce and require its user data to equal ``atls_user_data`` of the client
      certificate's SPKI hash (failure -> PERMISSION_DENIED with the rejection report), and
      only then spend the nonce (``NonceStore.spend``; a bounded set of verified nonces,
      full -> RESOURCE_EXHAUSTED, fail closed). Health checks and the handshake itself are not
      gated.
  S6. Run the handler with the verified evidence available through ``verified_peer()``.

Failures surface as typed errors: ``ATLSConnectionError`` (unreachable, TLS failure, timeout),
``ATLSHandshakeError`` (no or malformed answer, or the server's rate bound), ``ValidationError``
/ ``MalformedEvidenceError`` (evidence refused), on the server as gRPC status codes
(``NonceRefusedError`` -> UNAUTHENTICATED, ``NonceCapacityError`` and ``RateLimitedError`` ->
RESOURCE_EXHAUSTED).
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
    NonceCapacityError,
    NonceRefusedError,
    RateLimitedError,
)
from constellation.attestation.atls.nonces import NonceStore, VerifiedPeers
from constellation.attestation.atls.protocol import atls_user_data
from constellation.attestation.atls.ratelimit import TokenBucket
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
    "NonceCapacityError",
    "NonceRefusedError",
    "NonceStore",
    "RateLimitedError",
    "TLSIdentity",
    "TokenBucket",
    "VerifiedPeers",
    "atls_user_data",
    "connect",
    "connect_pinned",
    "fetch_server_certificate",
    "new_client_identity",
    "new_server_identity",
    "spki_hash",
    "verified_peer",
]
