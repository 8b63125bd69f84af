"""Ephemeral TLS identities of aTLS and the public aTLS client CA.

Every aTLS endpoint (server process or client connection) generates a fresh ECDSA P-256 key
and a certificate for it. The certificate carries no trust: a peer is trusted only because
attestation evidence names the SHA-256 of the certificate's SubjectPublicKeyInfo (DER) as its
user data, and the TLS handshake proves possession of the matching private key.

Server certificates are self-signed; the client pins exactly the one it fetched.

Client certificates are signed by the *aTLS client CA* below, whose private key is published
on purpose. grpcio can only request a client certificate when the server names a CA to chain
to, so some CA is needed just to make the TLS stack ask for (and prove possession of) the
client's key. Publishing its key is safe because nothing is ever authorised by a chain to this
CA: anybody may mint a client certificate, but a protected method runs only after the server
has validated fresh evidence (bound to its own nonce) whose user data is the SPKI hash of the
very certificate the TLS handshake authenticated. A certificate minted by an attacker is worth
exactly as much as the attestation the attacker can produce for its key: nothing.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from constellation.attestation.atls.errors import ATLSError

#: The DNS name every aTLS server certificate carries; clients pin the certificate itself and
#: tell gRPC to expect this name (``grpc.ssl_target_name_override``), whatever address they dial.
SERVER_NAME = "constellation-atls.invalid"

#: Validity of ephemeral certificates. Trust never depends on it (the key is attested, the
#: certificate is pinned), but TLS stacks check it, so it must comfortably cover a process's life
#: and tolerate skewed clocks.
_BACKDATE = datetime.timedelta(hours=1)
_SERVER_LIFETIME = datetime.timedelta(days=3650)
_CLIENT_LIFETIME = datetime.timedelta(days=7)

# The public aTLS client CA (see the module docstring for why publishing its key is safe).
# ECDSA P-256, CN "Constellation aTLS public client CA", valid 2025-01-01 .. 2125-01-01.
CLIENT_CA_KEY_PEM = b"""-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgFIw9fLupKwHdNUdr
5OZEtG0V/h5j6iANR9tH0X97GVChRANCAARdi1TdtzEvkxy+gVXJoonVtmqcCRxC
qZ7gIj9tXkHUoY+hR76zyXcIoPOgXn+hLjcCJXgy6tkItILELwo3esGc
-----END PRIVATE KEY-----
"""

CLIENT_CA_CERT_PEM = b"""-----BEGIN CERTIFICATE-----
MIIBkTCCATigAwIBAgIBATAKBggqhkjOPQQDAjAuMSwwKgYDVQQDDCNDb25zdGVs
bGF0aW9uIGFUTFMgcHVibGljIGNsaWVudCBDQTAgFw0yNTAxMDEwMDAwMDBaGA8y
MTI1MDEwMTAwMDAwMFowLjEsMCoGA1UEAwwjQ29uc3RlbGxhdGlvbiBhVExTIHB1
YmxpYyBjbGllbnQgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAARdi1TdtzEv
kxy+gVXJoonVtmqcCRxCqZ7gIj9tXkHUoY+hR76zyXcIoPOgXn+hLjcCJXgy6tkI
tILELwo3esGco0UwQzASBgNVHRMBAf8ECDAGAQH/AgEAMA4GA1UdDwEB/wQEAwIC
BDAdBgNVHQ4EFgQU9OlZ4YDusizx3oyMr+H8ehmUwDMwCgYIKoZIzj0EAwIDRwAw
RAIgGH8m5MWjz4Lp6bzQm3rF6ZnczGkUg508SOTgzyTk3rYCIDNAW1/2f7N/oZxN
ZYhzBkQtD/DKcuH+qraEYoZhnOcA
-----END CERTIFICATE-----
"""


class CertificateError(ATLSError):
    """A peer certificate could not be parsed."""


@dataclass(frozen=True, repr=False)
class TLSIdentity:
    """An ephemeral key with its certificate, in the PEM form gRPC and ``ssl`` consume.

    ``repr`` is redacted because the object holds a private key.
    """

    key_pem: bytes
    cert_pem: bytes
    cert_der: bytes

    @property
    def spki_hash(self) -> bytes:
        """The aTLS user data of this identity: ``SHA-256(DER SubjectPublicKeyInfo)``."""
        return spki_hash_of_der(self.cert_der)

    def __repr__(self) -> str:
        return f"TLSIdentity(spki_sha256={self.spki_hash.hex()}, key=<redacted>)"


def spki_hash(certificate: x509.Certificate) -> bytes:
    """``SHA-256`` of the certificate's DER SubjectPublicKeyInfo (DESIGN.md §3, P4)."""
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


def spki_hash_of_der(cert_der: bytes) -> bytes:
    """Like :func:`spki_hash`, from certificate DER; raises ``CertificateError`` if unparsable."""
    try:
        certificate = x509.load_der_x509_certificate(cert_der)
    except ValueError as exc:
        raise CertificateError(f"peer certificate is not valid DER X.509: {exc}") from exc
    return _peer_spki_hash(certificate)


def spki_hash_of_pem(cert_pem: bytes) -> bytes:
    """Like :func:`spki_hash`, from certificate PEM; raises ``CertificateError`` if unparsable."""
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise CertificateError(f"peer certificate is not valid PEM X.509: {exc}") from exc
    return _peer_spki_hash(certificate)


def _peer_spki_hash(certificate: x509.Certificate) -> bytes:
    """:func:`spki_hash` of a peer's certificate, whose key ``cryptography`` decodes lazily:
    an unknown curve or a point off its curve surfaces only here, as ``CertificateError``."""
    try:
        return spki_hash(certificate)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateError(
            f"peer certificate's public key cannot be read ({type(exc).__name__}: {exc}); "
            "the peer must present a certificate for a P-256 or other supported key"
        ) from None


def _identity(key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> TLSIdentity:
    return TLSIdentity(
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        cert_pem=certificate.public_bytes(serialization.Encoding.PEM),
        cert_der=certificate.public_bytes(serialization.Encoding.DER),
    )


#: Nonce of the inspection-only attestation embedded in a server certificate. It is constant,
#: so that evidence is *not fresh* and the protocol never relies on it (see
#: ``new_server_identity``).
INSPECTION_NONCE = bytes(32)

InspectionEvidence = Callable[[bytes], tuple[str, bytes]]


def new_server_identity(
    now: datetime.datetime | None = None, *, inspection_evidence: InspectionEvidence | None = None
) -> TLSIdentity:
    """A fresh P-256 key with a self-signed certificate for :data:`SERVER_NAME`.

    ``inspection_evidence(spki_hash) -> (variant OID, document)`` embeds a static attestation
    (over the key's SPKI hash and :data:`INSPECTION_NONCE`) as a non-critical extension under
    the variant's OID, so tools such as ``openssl x509 -text`` can show what the server claims
    to run. It is for inspection only: with a constant nonce it proves nothing about freshness,
    and clients always demand fresh evidence through the handshake.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Constellation aTLS server")])
    builder = x509.CertificateBuilder()
    if inspection_evidence is not None:
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        oid, document = inspection_evidence(hashlib.sha256(spki).digest())
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), document), critical=False
        )
    certificate = (
        builder.subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _SERVER_LIFETIME)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return _identity(key, certificate)


def new_client_identity(now: datetime.datetime | None = None) -> TLSIdentity:
    """A fresh P-256 key with a certificate signed by the public aTLS client CA."""
    now = now or datetime.datetime.now(datetime.UTC)
    ca_key = serialization.load_pem_private_key(CLIENT_CA_KEY_PEM, password=None)
    ca_cert = x509.load_pem_x509_certificate(CLIENT_CA_CERT_PEM)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):  # pragma: no cover - constant above
        raise CertificateError("the embedded aTLS client CA key is not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Constellation aTLS client")])
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _CLIENT_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return _identity(key, certificate)
