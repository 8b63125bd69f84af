"""Checking a TLS bundle (certificate, private key, CA) before a service uses it. Pure.

The KeyService serves mutual TLS with a server bundle, the JoinService calls it with a client
bundle; both come from the cluster-internal CA ``apply`` creates (``cli.servicepki``). A bundle
that cannot work should stop the service at start-up with every reason at once, not fail each
call later with an opaque TLS error. ``check_tls_bundle`` returns those reasons as failures
named by the caller (each service has its own stable check names).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from constellation.attestation.atls.certificates import CLIENT_CA_CERT_PEM
from constellation.attestation.errors import Failure
from constellation.attestation.x509errors import X509_DECODE_ERRORS


@dataclass(frozen=True)
class BundleNames:
    """The failure names a service reports for its certificate, key and CA."""

    cert: str
    key: str
    ca: str
    #: How messages name the certificate and the CA (e.g. "tls.crt", "the client CA").
    cert_role: str = "the certificate"
    ca_role: str = "the CA"


def load_certificate(pem: bytes) -> x509.Certificate | None:
    """The certificate, or None if it or any part the checks here read does not parse.

    cryptography decodes the key, the names and the extensions only when they are read; reading
    them once here makes a malformed part "unparsable" instead of an exception in a later check.
    """
    try:
        certificate = x509.load_pem_x509_certificate(pem)
        certificate.public_key()
        certificate.subject.rfc4514_string()
        certificate.issuer.rfc4514_string()
        for _extension in certificate.extensions:
            pass
    except X509_DECODE_ERRORS:
        return None
    return certificate


def load_private_key(pem: bytes) -> Any:
    """The key, or None if malformed, of an unsupported type or encrypted (TypeError: a password
    is required)."""
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except X509_DECODE_ERRORS:
        return None


def public_der(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def signed_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True if ``issuer`` directly issued ``certificate`` (names match, signature verifies)."""
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def extended_key_usages(certificate: x509.Certificate) -> tuple[x509.ObjectIdentifier, ...]:
    try:
        return tuple(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return ()


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def check_tls_bundle(
    cert_pem: bytes,
    key_pem: bytes,
    ca_pem: bytes,
    *,
    usage: x509.ObjectIdentifier,
    names: BundleNames,
    now: datetime.datetime,
) -> list[Failure]:
    """Every reason the bundle cannot authenticate with ``usage`` (empty: it can).

    Checked: each file parses, the key is the certificate's, the certificate is valid at
    ``now``, carries ``usage`` as an extended key usage and was issued by the CA; the CA is a CA
    and not the public aTLS client CA (whose key is published, so it proves nothing).
    """
    failures: list[Failure] = []
    certificate, key = load_certificate(cert_pem), load_private_key(key_pem)
    ca = load_certificate(ca_pem)
    if certificate is None:
        failures.append(Failure(names.cert, "a PEM X.509 certificate", "unparsable"))
    if key is None:
        failures.append(Failure(names.key, "an unencrypted PEM private key", "unparsable"))
    if ca is None:
        failures.append(Failure(names.ca, "a PEM X.509 CA certificate", "unparsable"))
    if certificate is not None:
        if key is not None and public_der(key.public_key()) != public_der(certificate.public_key()):
            failures.append(
                Failure(names.key, f"the private key of {names.cert_role}", "a different key pair")
            )
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            failures.append(
                Failure(
                    f"{names.cert}.validity",
                    f"valid at {now:%Y-%m-%dT%H:%M:%SZ}",
                    f"{certificate.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ} .. "
                    f"{certificate.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}",
                )
            )
        if usage not in extended_key_usages(certificate):
            failures.append(Failure(f"{names.cert}.eku", usage._name, "absent"))
    if ca is None:
        return failures
    public_ca = load_certificate(CLIENT_CA_CERT_PEM)
    if public_ca is not None and public_der(ca.public_key()) == public_der(public_ca.public_key()):
        failures.append(
            Failure(
                names.ca,
                "the cluster-internal service CA",
                "the public aTLS client CA, whose key is published",
            )
        )
    elif not _is_ca(ca):
        failures.append(Failure(names.ca, "a CA certificate", "not a CA (basicConstraints)"))
    if certificate is not None and not signed_by(certificate, ca):
        failures.append(
            Failure(
                f"{names.cert}.issuer",
                f"issued by {names.ca_role} {ca.subject.rfc4514_string()!r}",
                f"issued by {certificate.issuer.rfc4514_string()!r}",
            )
        )
    return failures
