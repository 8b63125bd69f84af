"""Sign a joining node's kubelet CSR with the cluster CA (DESIGN.md §3).

The node sends a PKCS#10 CSR for its kubelet key; the JoinService answers with a certificate
the API server accepts as ``system:node:<name>`` in group ``system:nodes`` (the Node
authorizer and NodeRestriction then confine the node to its own objects). The rules:

* The CSR is PEM, at most ``MAX_CSR_SIZE`` bytes, and its self-signature verifies (proof that
  the requester holds the private key).
* The subject is exactly ``O=system:nodes`` + ``CN=system:node:<name>``: one attribute per
  RDN, each exactly once, nothing else; ``<name>`` is a DNS-1123 subdomain.
* ``<name>`` is the name the caller's verified platform identity gives the node, passed in
  by the JoinService (``node_name``); the request cannot choose it. A CSR for any other name
  is a claim the identity does not back: :class:`CSRNodeNameError`, a ``RefusedError``
  (PERMISSION_DENIED), not a format error.
* The public key is ECDSA (P-256/P-384) or RSA with at least 2048 bits.
* Subject alternative names may only be IP addresses (copied into the certificate); other
  names are refused rather than silently dropped, and so are unspecified or multicast IPs.
* The certificate is signed by the cluster CA with ECDSA/SHA-256 (an RSA CA is refused at
  construction), is not a CA, has EKU clientAuth + serverAuth, and is valid from a small
  backdate to ``now + validity`` but never beyond the CA's own ``not_after``; the validity is
  bounded by ``MAX_VALIDITY``.

cryptography parses a CSR lazily: loading checks the outer structure, and the subject, the
public key, the extensions and the signature are decoded only when read, each able to raise its
own exception (``ValueError``, ``UnsupportedAlgorithm``, ...). Every such read of the untrusted
CSR goes through :data:`X509_DECODE_ERRORS`, so a part that does not parse is a typed refusal:
:class:`MalformedCSRError` for an unreadable subject, a failure (``csr.public_key``,
``csr.signature``, ``csr.extensions``) otherwise.

Every failed CSR check is reported at once in :class:`CSRRejectedError` (``failures``), so a
refused node's log names all the problems. The core, :func:`sign_kubelet_csr`, does no I/O:
bytes, the CA, the node's name and a clock in; a certificate or a typed error out.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from constellation.attestation.errors import Failure, render_failures
from constellation.attestation.x509errors import X509_DECODE_ERRORS
from constellation.joinservice.errors import ConfigError, InvalidRequestError, RefusedError
from constellation.joinservice.tickets import MAX_CSR_SIZE, NODE_NAME_PATTERN, SignedKubeletCert

NODES_GROUP: Final = "system:nodes"
NODE_USER_PREFIX: Final = "system:node:"
DEFAULT_VALIDITY: Final = timedelta(days=365)
MAX_VALIDITY: Final = timedelta(days=365)
#: Tolerated clock skew between the JoinService and the API server.
BACKDATE: Final = timedelta(minutes=5)
MIN_RSA_BITS: Final = 2048
ALLOWED_CURVES: Final = frozenset({"secp256r1", "secp384r1"})
_MAX_NODE_NAME = 253


class KubeletCSRError(InvalidRequestError):
    """Root of the refusals of a kubelet CSR (INVALID_ARGUMENT)."""


class MalformedCSRError(KubeletCSRError):
    """The request is not a parseable PEM PKCS#10 CSR of acceptable size."""


class CSRRejectedError(KubeletCSRError):
    """The CSR parsed but broke one or more rules; ``failures`` lists every one of them."""

    def __init__(self, failures: Sequence[Failure]) -> None:
        self.failures: tuple[Failure, ...] = tuple(failures)
        super().__init__(f"kubelet CSR refused: {render_failures(self.failures)}")


class CSRNodeNameError(RefusedError):
    """A well-formed CSR for a node name other than the caller's attested name
    (``csr.node_name``)."""


class SigningCAError(ConfigError):
    """The cluster CA cannot sign kubelet certificates (wrong key type, mismatch, expired)."""


@dataclass(frozen=True)
class SigningCA:
    """The cluster CA certificate and its ECDSA private key (``repr`` hides the key)."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def __repr__(self) -> str:
        return f"SigningCA(subject={self.certificate.subject.rfc4514_string()!r}, key=<redacted>)"

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> SigningCA:
        """Load the CA (e.g. kubeadm's ``pki/ca.crt`` + ``ca.key``) and check it can sign."""
        try:
            certificate = x509.load_pem_x509_certificate(cert_pem)
        except X509_DECODE_ERRORS as err:
            raise SigningCAError(f"cluster CA certificate is not PEM X.509: {err}") from None
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise SigningCAError(
                "cluster CA key is not an unencrypted PEM private key"
            ) from None  # the reason text could quote key material; keep it out
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise SigningCAError(
                f"cluster CA key is {type(key).__name__}, expected ECDSA; configure the "
                "cluster PKI with encryptionAlgorithm ECDSA-P256"
            )
        # The certificate parses lazily too (module docs): each part is read under a guard.
        try:
            public = certificate.public_key()
        except X509_DECODE_ERRORS as err:
            raise SigningCAError(
                f"cluster CA certificate's public key does not parse ({type(err).__name__})"
            ) from None
        if not isinstance(public, ec.EllipticCurvePublicKey) or public.public_numbers() != (
            key.public_key().public_numbers()
        ):
            raise SigningCAError("cluster CA key does not belong to the CA certificate")
        try:
            constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            raise SigningCAError("cluster CA certificate has no basicConstraints") from None
        except X509_DECODE_ERRORS as err:
            raise SigningCAError(
                f"cluster CA certificate's extensions do not parse ({type(err).__name__}: {err})"
            ) from None
        if not constraints.value.ca:
            raise SigningCAError("cluster CA certificate is not a CA (basicConstraints CA=false)")
        return cls(certificate=certificate, key=key)


def _load_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    if not csr_pem:
        raise MalformedCSRError("kubelet CSR is empty; send the kubelet's PEM CSR")
    if len(csr_pem) > MAX_CSR_SIZE:
        raise MalformedCSRError(
            f"kubelet CSR is {len(csr_pem)} bytes, more than the {MAX_CSR_SIZE}-byte limit"
        )
    try:
        return x509.load_pem_x509_csr(csr_pem)
    except X509_DECODE_ERRORS as err:
        raise MalformedCSRError(
            f"kubelet CSR is not a PEM PKCS#10 request ({type(err).__name__}: {err}); send the "
            "kubelet's unmodified PEM CSR"
        ) from None


def _subject_failures(csr: x509.CertificateSigningRequest) -> tuple[list[Failure], str | None]:
    """Check the subject; return the failures and the node name if the CN had the right form."""
    failures: list[Failure] = []
    try:
        subject = csr.subject
    except X509_DECODE_ERRORS as err:
        raise MalformedCSRError(
            f"kubelet CSR subject does not parse ({type(err).__name__}); send the kubelet's "
            "unmodified PEM CSR"
        ) from None
    if any(len(rdn) != 1 for rdn in subject.rdns):
        failures.append(Failure("csr.subject.rdn", "one attribute per RDN", "a multi-valued RDN"))
    orgs = [a.value for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    cns = [a.value for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    others = sorted(
        {a.oid.dotted_string for a in subject}
        - {NameOID.ORGANIZATION_NAME.dotted_string, NameOID.COMMON_NAME.dotted_string}
    )
    if orgs != [NODES_GROUP]:
        failures.append(
            Failure("csr.subject.organization", f"exactly O={NODES_GROUP}", repr(orgs)[:200])
        )
    if others:
        failures.append(
            Failure("csr.subject.extra_attributes", "only O and CN", ", ".join(others)[:200])
        )
    node_name: str | None = None
    if len(cns) != 1 or not isinstance(cns[0], str) or not cns[0].startswith(NODE_USER_PREFIX):
        failures.append(
            Failure(
                "csr.subject.common_name",
                f"exactly CN={NODE_USER_PREFIX}<name>",
                repr(cns)[:200],
            )
        )
    else:
        name = cns[0][len(NODE_USER_PREFIX) :]
        if len(name) > _MAX_NODE_NAME or not NODE_NAME_PATTERN.fullmatch(name):
            failures.append(
                Failure(
                    "csr.subject.node_name",
                    "a DNS-1123 subdomain (lowercase, <= 253)",
                    repr(name)[:80],
                )
            )
        else:
            node_name = name
    return failures, node_name


def _key_failures(csr: x509.CertificateSigningRequest) -> list[Failure]:
    try:
        key = csr.public_key()
    except X509_DECODE_ERRORS as err:
        return [
            Failure(
                "csr.public_key",
                "ECDSA P-256/P-384 or RSA >= 2048",
                f"a key that does not parse ({type(err).__name__})",
            )
        ]
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ALLOWED_CURVES:
            return [Failure("csr.public_key", "ECDSA P-256 or P-384", f"ECDSA {key.curve.name}")]
        return []
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            return [Failure("csr.public_key", f"RSA >= {MIN_RSA_BITS} bits", f"RSA {key.key_size}")]
        return []
    return [Failure("csr.public_key", "ECDSA or RSA", type(key).__name__)]


NodeIP = ipaddress.IPv4Address | ipaddress.IPv6Address


def _san_failures(csr: x509.CertificateSigningRequest) -> tuple[list[Failure], list[NodeIP]]:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    except X509_DECODE_ERRORS as err:
        reason = f"{type(err).__name__}: {err}"[:200]
        return [Failure("csr.extensions", "parseable extensions", reason)], []
    failures: list[Failure] = []
    ips: list[NodeIP] = []
    for name in san:
        if not isinstance(name, x509.IPAddress):
            failures.append(Failure("csr.san", "IP addresses only", f"{type(name).__name__} entry"))
            continue
        value = name.value
        if not isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
            failures.append(Failure("csr.san", "single IP addresses", "an IP network"))
        elif value.is_unspecified or value.is_multicast:
            failures.append(Failure("csr.san", "a unicast node IP", str(value)))
        else:
            ips.append(value)
    return failures, ips


def _signature_valid(csr: x509.CertificateSigningRequest) -> bool:
    """The self-signature verifies; a key or signature that does not parse does not verify."""
    try:
        return csr.is_signature_valid
    except X509_DECODE_ERRORS:
        return False


def check_kubelet_csr(
    csr_pem: bytes,
) -> tuple[
    x509.CertificateSigningRequest, str, list[ipaddress.IPv4Address | ipaddress.IPv6Address]
]:
    """Parse and check a kubelet CSR; return it, the node name and its IP SANs, or raise.

    Raises :class:`MalformedCSRError` if unparseable, else :class:`CSRRejectedError` with every
    failed check.
    """
    csr = _load_csr(csr_pem)
    subject_failures, node_name = _subject_failures(csr)
    key_failures = _key_failures(csr)
    failures: list[Failure] = []
    if not _signature_valid(csr):
        failures.append(
            Failure("csr.signature", "a valid self-signature", "signature does not verify")
        )
    failures += subject_failures
    failures += key_failures
    san_failures, ips = _san_failures(csr)
    failures += san_failures
    if failures or node_name is None:
        raise CSRRejectedError(failures)
    return csr, node_name, ips


def sign_kubelet_csr(
    csr_pem: bytes,
    ca: SigningCA,
    *,
    node_name: str,
    now: datetime,
    validity: timedelta = DEFAULT_VALIDITY,
) -> SignedKubeletCert:
    """Issue the kubelet certificate for a valid CSR for ``node_name`` (pure: no I/O).

    ``node_name`` is required, not defaulted to "whatever the CSR says": the certificate is
    the node's Kubernetes identity, and only the attested platform identity may name it.
    Raises :class:`CSRNodeNameError` for a valid CSR that names another node.
    """
    if not timedelta(0) < validity <= MAX_VALIDITY:
        raise SigningCAError(f"kubelet certificate validity must be in (0, {MAX_VALIDITY}]")
    if now.tzinfo is None:
        raise SigningCAError("the signing clock must be timezone-aware (UTC)")
    ca_cert = ca.certificate
    if not ca_cert.not_valid_before_utc <= now < ca_cert.not_valid_after_utc:
        raise SigningCAError(
            f"cluster CA is not valid at {now.isoformat()} (valid "
            f"{ca_cert.not_valid_before_utc.isoformat()} to "
            f"{ca_cert.not_valid_after_utc.isoformat()})"
        )
    csr, requested, ips = check_kubelet_csr(csr_pem)
    if requested != node_name:
        raise CSRNodeNameError(
            [
                Failure(
                    "csr.node_name",
                    f"CN={NODE_USER_PREFIX}{node_name[:80]}",
                    f"CN={NODE_USER_PREFIX}{requested[:80]}",
                    detail="the platform identity names this node; request the kubelet "
                    "certificate for that name",
                )
            ],
            subject="kubelet CSR",
        )
    public_key = csr.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)  # checked above
    not_after = min(now + validity, ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODES_GROUP),
                    x509.NameAttribute(NameOID.COMMON_NAME, NODE_USER_PREFIX + node_name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1 or 1)
        .not_valid_before(max(now - BACKDATE, ca_cert.not_valid_before_utc))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if ips:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ip) for ip in ips]), critical=False
        )
    certificate = builder.sign(ca.key, hashes.SHA256())
    return SignedKubeletCert(
        node_name=node_name, cert_pem=certificate.public_bytes(serialization.Encoding.PEM)
    )


class KubeletCertSigner:
    """The JoinService's ``KubeletSigner``: the cluster CA plus a clock and a validity."""

    def __init__(
        self,
        ca: SigningCA,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        validity: timedelta = DEFAULT_VALIDITY,
    ) -> None:
        if not timedelta(0) < validity <= MAX_VALIDITY:
            raise SigningCAError(f"kubelet certificate validity must be in (0, {MAX_VALIDITY}]")
        self._ca = ca
        self._clock = clock
        self._validity = validity

    def sign(self, csr_pem: bytes, *, node_name: str) -> SignedKubeletCert:
        return sign_kubelet_csr(
            csr_pem, self._ca, node_name=node_name, now=self._clock(), validity=self._validity
        )
