"""Verifying an AK certificate: pure, every failure reported, never an escaping parser error.

Invariant: ``verify_ak_certificate`` returns a ``NodeIdentity`` only when every check below
holds, and otherwise returns ``None`` with one ``Failure`` per failed check; it never raises on
hostile input (anything ``cryptography`` throws at a malformed certificate becomes a
failure). The checks, by stable name:

``ak.certificate``
    present, at most ``MAX_CERTIFICATE_SIZE`` bytes, DER X.509 v3 that parses completely.
``ak.certificate.chain``
    signed (ECDSA or RSA PKCS#1 v1.5, SHA-2) by the key of one configured platform root whose
    subject is the certificate's issuer and which is a CA.
``ak.certificate.validity``
    the certificate, and the root it chains to, are valid at the caller's time ``at``.
``ak.certificate.key``
    its SubjectPublicKeyInfo is exactly the quoting AK's (so a genuine certificate of another
    node's AK is worthless).
``ak.certificate.usage``
    EKU ``AK_CERTIFICATE_EKU``; not a CA; key usage, if present, digitalSignature and not
    keyCertSign; no critical extension this profile does not know.
``ak.certificate.identity``
    exactly one subject CN that is an instance name, and a role extension naming a role.

If the certificate does not parse, the other checks cannot run and only ``ak.certificate`` is
reported. ``load_platform_roots`` is the configuration side: it turns a PEM bundle into the
roots this module trusts, or raises ``PlatformRootError``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtensionOID, NameOID, SignatureAlgorithmOID

from constellation.attestation.errors import Failure
from constellation.attestation.identity import NodeIdentity, Role
from constellation.attestation.identity.errors import InvalidIdentityError, PlatformRootError
from constellation.attestation.identity.profile import (
    AK_CERTIFICATE_EKU,
    NODE_ROLE_OID,
    decode_role,
    is_instance_name,
)
from constellation.attestation.x509errors import X509_DECODE_ERRORS

# An AK certificate is well under 2 KiB; anything far larger is not one.
MAX_CERTIFICATE_SIZE = 16 << 10
MAX_PLATFORM_ROOTS = 16
MAX_ROOTS_PEM_SIZE = 1 << 20
# How much of an attacker-chosen name a failure may quote.
_MAX_QUOTED = 80


_ECDSA_SIGNATURES = frozenset(
    {
        SignatureAlgorithmOID.ECDSA_WITH_SHA256,
        SignatureAlgorithmOID.ECDSA_WITH_SHA384,
        SignatureAlgorithmOID.ECDSA_WITH_SHA512,
    }
)
_RSA_SIGNATURES = frozenset(
    {
        SignatureAlgorithmOID.RSA_WITH_SHA256,
        SignatureAlgorithmOID.RSA_WITH_SHA384,
        SignatureAlgorithmOID.RSA_WITH_SHA512,
    }
)
_KNOWN_EXTENSIONS = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        NODE_ROLE_OID,
    }
)
_MIN_RSA_BITS = 2048


def platform_fingerprint(root: x509.Certificate) -> str:
    """Hex SHA-256 of a platform root's DER: how ``NodeIdentity.platform`` names it."""
    return hashlib.sha256(root.public_bytes(serialization.Encoding.DER)).hexdigest()


def _spki(key: object) -> bytes:
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise TypeError("not an ECDSA or RSA key")
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _short_hash(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()[:16] + "… (SPKI SHA-256)"


def _quote(text: str) -> str:
    return repr(text[:_MAX_QUOTED] + ("…" if len(text) > _MAX_QUOTED else ""))


def _utc(at: datetime) -> datetime:
    """``at`` as an aware UTC time; a naive ``at`` is taken to be UTC already."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _touch(cert: x509.Certificate) -> None:
    """Parse every part of ``cert`` that a later check reads, so parser errors surface here.

    ``cryptography`` decodes names, extensions and keys lazily; a malformed part would
    otherwise raise from the middle of a check.
    """
    _ = cert.version, cert.serial_number, cert.subject, cert.issuer
    _ = cert.not_valid_before_utc, cert.not_valid_after_utc
    _ = cert.signature_algorithm_oid, cert.signature, cert.tbs_certificate_bytes
    _ = cert.extensions, cert.public_key()


def _parse(cert_der: bytes | None) -> tuple[x509.Certificate | None, Failure | None]:
    def failure(actual: str, detail: str) -> tuple[None, Failure]:
        return None, Failure(
            "ak.certificate",
            f"a DER X.509 v3 AK certificate of at most {MAX_CERTIFICATE_SIZE} bytes",
            actual,
            detail=detail,
        )

    if not cert_der:
        return failure(
            "none",
            "the node must attach the AK certificate its platform issued (VtpmIssuer's "
            "ak_certificate); provision the node with the platform CA",
        )
    if len(cert_der) > MAX_CERTIFICATE_SIZE:
        return failure(f"{len(cert_der)} bytes", "this is not an AK certificate")
    try:
        cert = x509.load_der_x509_certificate(cert_der)
        _touch(cert)
        if cert.version is not x509.Version.v3:
            return failure(f"X.509 {cert.version.name}", "the profile needs v3 extensions")
        if cert.serial_number <= 0:
            return failure("a serial number that is not positive", "re-issue the AK certificate")
        if not _signature_bits_whole(cert_der):
            return failure(
                "a signature BIT STRING with unused bits",
                "not canonical DER: the same certificate must have exactly one encoding",
            )
    except X509_DECODE_ERRORS as exc:
        return failure(f"unparsable ({type(exc).__name__})", "re-issue the AK certificate")
    return cert, None


def _der_header(data: bytes, offset: int) -> tuple[int, int, int]:
    """``(tag, content start, content length)`` of the DER element at ``offset``."""
    if offset + 2 > len(data):
        raise ValueError("truncated DER header")
    tag, first = data[offset], data[offset + 1]
    if first < 0x80:
        return tag, offset + 2, first
    count = first & 0x7F
    if not 1 <= count <= 4 or offset + 2 + count > len(data):
        raise ValueError("unsupported DER length")
    length = int.from_bytes(data[offset + 2 : offset + 2 + count], "big")
    return tag, offset + 2 + count, length


def _signature_bits_whole(cert_der: bytes) -> bool:
    """Whether the outer signature BIT STRING declares zero unused bits, as DER demands.

    ``cryptography`` accepts a signature BIT STRING whose "unused bits" byte is non-zero (the
    signature still verifies over the unchanged TBS part), which gives one certificate many
    encodings. Certificate = SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }.
    """
    _, start, _ = _der_header(cert_der, 0)
    _, tbs_start, tbs_length = _der_header(cert_der, start)
    _, algorithm_start, algorithm_length = _der_header(cert_der, tbs_start + tbs_length)
    tag, bits_start, bits_length = _der_header(cert_der, algorithm_start + algorithm_length)
    return tag == 0x03 and bits_length >= 1 and cert_der[bits_start] == 0


def _is_ca(cert: x509.Certificate) -> bool:
    """A CA certificate: basic constraints CA=true and, if key usage is present, keyCertSign."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    if not constraints.ca:
        return False
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return usage.key_cert_sign


def _signed_by(cert: x509.Certificate, root: x509.Certificate) -> bool:
    """Whether ``root``'s key made ``cert``'s signature, with an algorithm this profile allows."""
    algorithm = cert.signature_algorithm_oid
    try:
        digest = cert.signature_hash_algorithm
        key = root.public_key()
    except X509_DECODE_ERRORS:
        return False
    if not isinstance(digest, hashes.SHA256 | hashes.SHA384 | hashes.SHA512):
        return False
    try:
        if algorithm in _ECDSA_SIGNATURES and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(digest))
            return True
        if algorithm in _RSA_SIGNATURES and isinstance(key, rsa.RSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), digest)
            return True
    except InvalidSignature:
        return False
    except X509_DECODE_ERRORS:
        return False
    return False


def _check_chain(
    cert: x509.Certificate, roots: Sequence[x509.Certificate]
) -> tuple[x509.Certificate | None, list[Failure]]:
    for root in roots:
        if root.subject == cert.issuer and _is_ca(root) and _signed_by(cert, root):
            return root, []
    supported = cert.signature_algorithm_oid in _ECDSA_SIGNATURES | _RSA_SIGNATURES
    if not roots:
        actual = "no platform roots configured"
    elif not supported:
        actual = f"signature algorithm {cert.signature_algorithm_oid.dotted_string} not allowed"
    else:
        actual = f"issuer {_quote(cert.issuer.rfc4514_string())} signed by none of them"
    return None, [
        Failure(
            "ak.certificate.chain",
            f"an ECDSA or RSA PKCS#1 v1.5 SHA-2 signature by one of {len(roots)} "
            "configured platform root CA(s)",
            actual,
            detail="issue the AK certificate with the platform CA whose root is configured, "
            "or configure that CA's root",
        )
    ]


def _check_validity(
    cert: x509.Certificate, root: x509.Certificate | None, at: datetime
) -> list[Failure]:
    failures = []
    for what, subject in (("AK certificate", cert), ("platform root", root)):
        if subject is None:
            continue
        start, end = subject.not_valid_before_utc, subject.not_valid_after_utc
        if not start <= at <= end:
            failures.append(
                Failure(
                    "ak.certificate.validity",
                    f"{what} valid at {at.isoformat()}",
                    f"valid from {start.isoformat()} to {end.isoformat()}",
                    detail=f"re-issue the {what}, or check the verifier's clock",
                )
            )
    return failures


def _normalized(spki_der: bytes) -> bytes:
    """``spki_der`` re-encoded canonically (e.g. an uncompressed EC point), if it parses."""
    try:
        return _spki(serialization.load_der_public_key(spki_der))
    except X509_DECODE_ERRORS:
        return spki_der


def _check_key(cert: x509.Certificate, ak_spki_der: bytes) -> list[Failure]:
    expected = f"a certificate for the quoting AK {_short_hash(ak_spki_der)}"
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        return [
            Failure(
                "ak.certificate.key",
                expected,
                f"a certificate for a {type(key).__name__}",
                detail="an AK is an ECDSA or RSA key; certify this node's AK",
            )
        ]
    certified = _spki(key)
    if certified == _normalized(ak_spki_der):
        return []
    return [
        Failure(
            "ak.certificate.key",
            expected,
            f"a certificate for key {_short_hash(certified)}",
            detail="the certificate belongs to another key; the node must attach its own "
            "AK's certificate",
        )
    ]


def _check_usage(cert: x509.Certificate) -> list[Failure]:
    extensions = cert.extensions
    failures = []

    def fail(expected: str, actual: str) -> None:
        failures.append(
            Failure(
                "ak.certificate.usage",
                expected,
                actual,
                detail="issue AK certificates with the platform CA's AK profile",
            )
        )

    try:
        eku = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if AK_CERTIFICATE_EKU not in eku:
            fail(f"extended key usage {AK_CERTIFICATE_EKU.dotted_string}", "other usages only")
    except x509.ExtensionNotFound:
        fail(f"extended key usage {AK_CERTIFICATE_EKU.dotted_string}", "no extended key usage")
    try:
        if extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            fail("an end-entity certificate (CA=false)", "a CA certificate (CA=true)")
    except x509.ExtensionNotFound:
        pass
    try:
        usage = extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.digital_signature or usage.key_cert_sign:
            fail("key usage digitalSignature (not keyCertSign)", "another key usage")
    except x509.ExtensionNotFound:
        pass
    unknown = sorted(
        e.oid.dotted_string for e in extensions if e.critical and e.oid not in _KNOWN_EXTENSIONS
    )
    if unknown:
        fail("no unknown critical extensions", "critical " + ", ".join(unknown[:4]))
    return failures


def _check_identity(cert: x509.Certificate) -> tuple[str | None, Role | None, list[Failure]]:
    failures = []

    def fail(expected: str, actual: str) -> None:
        failures.append(
            Failure(
                "ak.certificate.identity",
                expected,
                actual,
                detail="the platform must name the instance and its role in the certificate",
            )
        )

    name: str | None = None
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if len(names) != 1:
        fail("exactly one subject CN (the instance name)", f"{len(names)} CNs")
    elif not isinstance(names[0], str) or not is_instance_name(names[0]):
        shown = names[0] if isinstance(names[0], str) else "<bytes>"
        fail("a subject CN that is a DNS label of 1..63 characters", _quote(shown))
    else:
        name = names[0]
    role: Role | None = None
    try:
        extension = cert.extensions.get_extension_for_oid(NODE_ROLE_OID).value
    except x509.ExtensionNotFound:
        fail(f"the role extension {NODE_ROLE_OID.dotted_string}", "none")
    else:
        value = getattr(extension, "value", b"")
        try:
            role = decode_role(value if isinstance(value, bytes) else b"")
        except InvalidIdentityError as exc:
            fail("a role extension naming control-plane or worker", str(exc))
    return name, role, failures


def verify_ak_certificate(
    cert_der: bytes | None,
    *,
    ak_spki_der: bytes,
    roots: Sequence[x509.Certificate],
    at: datetime,
) -> tuple[NodeIdentity | None, list[Failure]]:
    """``(identity, [])`` when ``cert_der`` certifies ``ak_spki_der`` under one of ``roots``
    at time ``at``; ``(None, failures)`` listing every failed check otherwise.

    ``ak_spki_der`` is the DER SubjectPublicKeyInfo of the key that verified the quote (as
    ``TpmPublic.spki_der()`` renders it); ``roots`` are trusted configuration, typically from
    ``load_platform_roots``. Returning failures instead of raising lets a validator put them
    next to the quote's and the measurements' in one rejection.
    """
    cert, parse_failure = _parse(cert_der)
    if cert is None:
        assert parse_failure is not None
        return None, [parse_failure]
    when = _utc(at)
    try:
        root, failures = _check_chain(cert, roots)
        failures += _check_validity(cert, root, when)
        failures += _check_key(cert, ak_spki_der)
        failures += _check_usage(cert)
        name, role, identity_failures = _check_identity(cert)
        failures += identity_failures
    except X509_DECODE_ERRORS as exc:  # defence in depth: _parse touched every part already
        return None, [
            Failure(
                "ak.certificate",
                "a DER X.509 v3 AK certificate",
                f"unparsable ({type(exc).__name__})",
            )
        ]
    if failures or root is None or name is None or role is None:
        return None, failures
    identity = NodeIdentity(
        name=name,
        role=role,
        ak_sha256=hashlib.sha256(ak_spki_der).hexdigest(),
        platform=platform_fingerprint(root),
    )
    return identity, []


def _check_root(index: int, root: x509.Certificate) -> None:
    where = f"platform root #{index + 1} ({_quote(root.subject.rfc4514_string())})"
    if not _is_ca(root):
        raise PlatformRootError(
            f"{where} is not a CA certificate: expected basic constraints CA=true (and "
            "keyCertSign if key usage is present); configure the platform CA's certificate, "
            "not a node's"
        )
    key = root.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= _MIN_RSA_BITS:
        return
    if isinstance(key, ec.EllipticCurvePublicKey):
        return
    raise PlatformRootError(
        f"{where} has a key that cannot verify AK certificates: expected ECDSA or RSA of at "
        f"least {_MIN_RSA_BITS} bits, found {type(key).__name__}"
    )


def load_platform_roots(pem: bytes) -> tuple[x509.Certificate, ...]:
    """The platform root CAs in a PEM bundle, checked once at configuration time.

    Raises ``PlatformRootError`` when the bundle is too large, holds no certificate, does not
    parse, holds more than ``MAX_PLATFORM_ROOTS`` distinct roots, or a root is not a CA with
    an ECDSA or RSA key. Duplicates are dropped. Messages never quote the bundle (a key pasted
    by mistake stays out of logs).
    """
    if len(pem) > MAX_ROOTS_PEM_SIZE:
        raise PlatformRootError(
            f"platform root bundle of {len(pem)} bytes exceeds {MAX_ROOTS_PEM_SIZE} bytes; "
            "configure only the platform CA certificates"
        )
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise PlatformRootError(
            "no certificates in the platform root bundle: expected one or more PEM "
            "'CERTIFICATE' blocks; configure the platform CA's certificate"
        )
    try:
        loaded = x509.load_pem_x509_certificates(pem)
        for cert in loaded:
            _touch(cert)
    except X509_DECODE_ERRORS as exc:
        raise PlatformRootError(
            f"the platform root bundle does not parse ({type(exc).__name__}): expected PEM "
            "X.509 certificates; re-export the platform CA certificate"
        ) from None
    roots: dict[bytes, x509.Certificate] = {}
    for cert in loaded:
        roots.setdefault(cert.public_bytes(serialization.Encoding.DER), cert)
    if len(roots) > MAX_PLATFORM_ROOTS:
        raise PlatformRootError(
            f"{len(roots)} platform roots configured, at most {MAX_PLATFORM_ROOTS} allowed; "
            "configure only the CAs that certify this cluster's nodes"
        )
    unique = tuple(roots.values())
    for index, root in enumerate(unique):
        _check_root(index, root)
    return unique


__all__ = [
    "MAX_CERTIFICATE_SIZE",
    "MAX_PLATFORM_ROOTS",
    "load_platform_roots",
    "platform_fingerprint",
    "verify_ak_certificate",
]
