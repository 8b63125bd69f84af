"""The issuing side of platform identity: a platform CA that certifies nodes' AKs.

A cloud does this when it creates a vTPM: it creates the AK inside the vTPM, reads the AK's
public key, and signs an AK certificate (``identity.profile``) naming the instance and its
role. In mini mode the CLI plays the cloud with a ``PlatformCA`` kept in the admin's
workspace; tests use one per session. Invariant: a ``PlatformCA`` only ever signs
certificates of the AK profile (never a CA, never another usage), and its private key leaves
the object only as ``SecretBytes``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from constellation.attestation.identity import Role
from constellation.attestation.identity.errors import PlatformCAError
from constellation.attestation.identity.profile import (
    AK_CERTIFICATE_EKU,
    NODE_ROLE_OID,
    PLATFORM_ORGANIZATION,
    check_instance_name,
    encode_role,
)
from constellation.attestation.identity.verify import platform_fingerprint
from constellation.attestation.secret import SecretBytes

CA_VALIDITY = timedelta(days=3650)
AK_CERTIFICATE_VALIDITY = timedelta(days=3650)
# Certificates start a little in the past, so a verifier whose clock lags still accepts them.
CLOCK_SKEW = timedelta(minutes=5)
DEFAULT_CA_NAME = "constellation platform CA"
_MIN_RSA_BITS = 2048

CAKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _load_ak_key(ak_spki_der: bytes) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    """The AK's public key, if the profile can certify it (ECDSA P-256 or RSA >= 2048)."""
    try:
        key = serialization.load_der_public_key(ak_spki_der)
    except (ValueError, TypeError) as exc:
        raise PlatformCAError(
            f"the AK public key is not a DER SubjectPublicKeyInfo ({type(exc).__name__}); "
            "pass TpmPublic.spki_der() of the AK"
        ) from None
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= _MIN_RSA_BITS:
        return key
    raise PlatformCAError(
        f"cannot certify a {type(key).__name__} as an AK: expected ECDSA P-256 or RSA of at "
        f"least {_MIN_RSA_BITS} bits; create the AK with one of the supported templates"
    )


class PlatformCA:
    """A platform CA: its self-signed certificate (the platform root) and its private key."""

    def __init__(self, certificate: x509.Certificate, key: CAKey) -> None:
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise PlatformCAError("a platform CA key must be ECDSA or RSA")
        public = certificate.public_key()
        encoding = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey) or (
            public.public_bytes(*encoding) != key.public_key().public_bytes(*encoding)
        ):
            raise PlatformCAError(
                "the platform CA key does not belong to its certificate; load the key that "
                "was generated with this certificate"
            )
        try:
            constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.value.ca:
            raise PlatformCAError(
                "the platform CA certificate is not a CA (basic constraints CA=true missing); "
                "use a certificate made by PlatformCA.generate"
            )
        self._certificate = certificate
        self._key = key

    @classmethod
    def generate(
        cls,
        common_name: str = DEFAULT_CA_NAME,
        *,
        not_before: datetime | None = None,
        validity: timedelta = CA_VALIDITY,
    ) -> PlatformCA:
        """A new CA with an ECDSA P-256 key and a self-signed certificate (10 years)."""
        key = ec.generate_private_key(ec.SECP256R1())
        start = (not_before or datetime.now(UTC) - CLOCK_SKEW).astimezone(UTC)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, PLATFORM_ORGANIZATION),
            ]
        )
        subject_key_id = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + validity)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(subject_key_id, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes | SecretBytes) -> PlatformCA:
        """The CA saved earlier as ``cert_pem`` and ``key_pem`` (unencrypted PKCS#8 PEM)."""
        raw_key = key_pem.reveal() if isinstance(key_pem, SecretBytes) else key_pem
        try:
            certificate = x509.load_pem_x509_certificate(cert_pem)
        except ValueError:
            raise PlatformCAError(
                "the platform CA certificate is not a PEM X.509 certificate; pass the "
                "cert_pem a PlatformCA wrote"
            ) from None
        try:
            key = serialization.load_pem_private_key(raw_key, password=None)
        except (ValueError, TypeError):
            raise PlatformCAError(
                "the platform CA key is not an unencrypted PEM private key; pass the key_pem "
                "a PlatformCA wrote"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise PlatformCAError(
                f"the platform CA key is a {type(key).__name__}: expected ECDSA or RSA"
            )
        return cls(certificate, key)

    @property
    def certificate(self) -> x509.Certificate:
        """The CA certificate: what validators configure as a platform root."""
        return self._certificate

    @property
    def cert_pem(self) -> bytes:
        return self._certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> SecretBytes:
        """The private key as unencrypted PKCS#8 PEM, wrapped so it cannot reach a log."""
        return SecretBytes(
            self._key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    @property
    def fingerprint(self) -> str:
        """Hex SHA-256 of the CA certificate's DER (``NodeIdentity.platform``)."""
        return platform_fingerprint(self._certificate)

    def __repr__(self) -> str:
        return f"PlatformCA(subject={self._certificate.subject.rfc4514_string()!r})"

    def issue_ak_certificate(
        self,
        ak_spki_der: bytes,
        name: str,
        role: Role,
        *,
        not_before: datetime | None = None,
        validity: timedelta = AK_CERTIFICATE_VALIDITY,
    ) -> bytes:
        """A DER AK certificate binding the AK ``ak_spki_der`` to instance ``name`` and ``role``.

        The platform must only call this for a key it read from the vTPM it created for that
        instance: the certificate is exactly the claim "this key lives in that machine's TPM".
        Raises ``InvalidIdentityError`` for a name or role outside the profile and
        ``PlatformCAError`` for a key the profile cannot carry.
        """
        check_instance_name(name)
        node_role = Role(role)
        ak_key = _load_ak_key(ak_spki_der)
        start = (not_before or datetime.now(UTC) - CLOCK_SKEW).astimezone(UTC)
        ca_key_id = x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.COMMON_NAME, name),
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, PLATFORM_ORGANIZATION),
                    ]
                )
            )
            .issuer_name(self._certificate.subject)
            .public_key(ak_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([AK_CERTIFICATE_EKU]), critical=False)
            .add_extension(
                x509.UnrecognizedExtension(NODE_ROLE_OID, encode_role(node_role)), critical=False
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ak_key), critical=False)
            .add_extension(ca_key_id, critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.DER)


__all__ = ["AK_CERTIFICATE_VALIDITY", "CA_VALIDITY", "PlatformCA"]
