"""The cluster-internal service PKI: who may call the KeyService, and how it proves who it is.

The KeyService hands out the measurement secret and every node's disk key, so only the
JoinService may call it. The admin's CLI is the root of trust and already creates the master
secret during ``apply``; at the same point :func:`issue_service_pki` creates a **dedicated**
certificate authority for this one channel (ECDSA P-256) and issues exactly two certificates:

- the KeyService's server certificate (EKU serverAuth; DNS SANs :data:`SERVER_NAME`, which the
  JoinService checks whatever address it dials, and the chart's Service names in the namespace);
- the JoinService's client certificate (EKU clientAuth; CN :data:`CLIENT_NAME`, the one caller
  the KeyService authorizes).

Then the CA's private key is **dropped**: it exists only in this function's frame and is never
returned, written or logged. Nothing else will ever need a certificate from this CA, so no
later process can mint a third identity that chains to it, not even with a copy of everything
the CLI or the cluster stores. Re-creating the certificates means creating a new CA (a new
``apply``), which also invalidates the old pair. The result is two bundles in the layout the
charts mount (``ca.crt``, ``tls.crt``, ``tls.key``), written as the Secrets
``constellation-keyservice-tls`` and ``constellation-keyservice-client``.

Why not the public aTLS client CA (``attestation.atls.certificates``)? Its key is published on
purpose (aTLS trusts evidence, not the chain), so a chain to it authorizes nothing; and why
not the Kubernetes cluster CA? The JoinService holds that CA's key to sign kubelet
certificates, and every kubelet holds a certificate from it.

Pure: keys and certificates in memory, no file system and no network; the clock is a parameter.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from constellation.keyservice.tls import CLIENT_NAME, SERVER_NAME

#: Default namespace and Service name of the KeyService chart (``charts/keyservice``).
DEFAULT_NAMESPACE: Final = "kube-system"
DEFAULT_SERVICE: Final = "keyservice"
#: The CA's subject; the random suffix of each CA is its serial number.
CA_NAME: Final = "Constellation cluster-internal service CA"
#: Long enough to outlive a cluster: with the CA key gone there is no renewal, only a new PKI.
LIFETIME: Final = datetime.timedelta(days=3650)
#: Tolerate clocks that lag the admin's workstation.
BACKDATE: Final = datetime.timedelta(hours=1)

#: Keys of each Secret, as the charts mount them (the layout of a ``kubernetes.io/tls`` Secret
#: plus the CA).
CA_FILE: Final = "ca.crt"
CERT_FILE: Final = "tls.crt"
KEY_FILE: Final = "tls.key"


@dataclass(frozen=True, repr=False)
class TLSBundle:
    """One service's side of the channel: the CA to trust, its certificate and its key.

    ``repr`` is redacted: ``key_pem`` is a private key.
    """

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    def secret_data(self) -> dict[str, bytes]:
        """The Secret's data, keyed as the charts mount it."""
        return {CA_FILE: self.ca_pem, CERT_FILE: self.cert_pem, KEY_FILE: self.key_pem}

    def __repr__(self) -> str:
        subject = x509.load_pem_x509_certificate(self.cert_pem).subject.rfc4514_string()
        return f"TLSBundle(subject={subject!r}, key=<redacted>)"


@dataclass(frozen=True, repr=False)
class ServicePKI:
    """What :func:`issue_service_pki` returns; the CA key is deliberately not part of it."""

    keyservice_server: TLSBundle
    joinservice_client: TLSBundle

    def __repr__(self) -> str:
        return "ServicePKI(keyservice_server=<bundle>, joinservice_client=<bundle>)"


def keyservice_dns_names(
    namespace: str = DEFAULT_NAMESPACE, service: str = DEFAULT_SERVICE
) -> tuple[str, ...]:
    """The names the KeyService's certificate carries.

    The fixed :data:`SERVER_NAME` is what the JoinService checks (it dials an IP in mini mode
    and a Service name in a cluster); the Service's DNS names are there so that a client that
    verifies the dialled name also works.
    """
    return (
        SERVER_NAME,
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    )


@dataclass(frozen=True, repr=False)
class CertificateAuthority:
    """A CA while it issues; :func:`issue_service_pki` lets it go out of scope afterwards.

    ``repr`` is redacted: ``key`` signs certificates every KeyService of the cluster trusts.
    """

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def __repr__(self) -> str:
        return f"CertificateAuthority(subject={self.certificate.subject.rfc4514_string()!r})"


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _key_usage(*, leaf: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=leaf,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=not leaf,
        crl_sign=not leaf,
        encipher_only=False,
        decipher_only=False,
    )


def create_ca(now: datetime.datetime) -> CertificateAuthority:
    """A fresh self-signed P-256 CA that can sign leaves only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    serial = x509.random_serial_number()
    # The serial in the name tells two CAs (two applies) apart in error messages.
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{CA_NAME} {serial:x}"[:64])])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(leaf=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(key, certificate)


def issue(
    ca: CertificateAuthority,
    *,
    common_name: str,
    usage: x509.ObjectIdentifier,
    dns_names: tuple[str, ...] = (),
    now: datetime.datetime,
) -> TLSBundle:
    """A fresh P-256 key and a certificate from ``ca`` for one purpose (EKU ``usage``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(leaf=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if dns_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False
        )
    certificate = builder.sign(ca.key, hashes.SHA256())
    return TLSBundle(
        ca_pem=ca.cert_pem,
        cert_pem=certificate.public_bytes(serialization.Encoding.PEM),
        key_pem=_pem_key(key),
    )


def issue_service_pki(
    *,
    namespace: str = DEFAULT_NAMESPACE,
    service: str = DEFAULT_SERVICE,
    now: datetime.datetime | None = None,
) -> ServicePKI:
    """A fresh CA, the KeyService's server and the JoinService's client certificate.

    The CA goes out of scope when this returns (see the module docstring for why that is the
    point); the result holds its certificate only.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    ca = create_ca(now)
    return ServicePKI(
        keyservice_server=issue(
            ca,
            common_name=SERVER_NAME,
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            dns_names=keyservice_dns_names(namespace, service),
            now=now,
        ),
        joinservice_client=issue(
            ca, common_name=CLIENT_NAME, usage=ExtendedKeyUsageOID.CLIENT_AUTH, now=now
        ),
    )
