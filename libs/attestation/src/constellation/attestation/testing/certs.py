"""Self-signed certificates for tests: a CA of any name, a client of any name.

Tests of every package need certificates no real CA would issue them (a look-alike of the
platform CA, a CA without keyCertSign, an Ed25519 root, a client the KeyService must refuse).
They are all one builder with different knobs; nothing here is used by the product.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

DEFAULT_LIFETIME = datetime.timedelta(days=30)


def self_signed(
    key: CertificateIssuerPrivateKeyTypes,
    common_name: str,
    *,
    organization: str | None = None,
    ca: bool | None = True,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    serial: int | None = None,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    algorithm: hashes.HashAlgorithm | None = None,
) -> x509.Certificate:
    """A certificate ``key`` signs for itself.

    ``ca``: BasicConstraints CA=true/false, or ``None`` for no BasicConstraints at all.
    ``algorithm`` defaults to SHA-256 (pass ``None`` explicitly only for Ed25519 keys, whose
    signature takes none). Validity defaults to an hour ago until 30 days from now.
    """
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization is not None:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    name = x509.Name(attributes)
    now = datetime.datetime.now(datetime.UTC)
    start = not_before or now - datetime.timedelta(hours=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(not_after or start + DEFAULT_LIFETIME)
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical)
    signing = algorithm if algorithm is not None or _is_eddsa(key) else hashes.SHA256()
    return builder.sign(key, signing)  # type: ignore[arg-type]


def _is_eddsa(key: CertificateIssuerPrivateKeyTypes) -> bool:
    from cryptography.hazmat.primitives.asymmetric import ed448, ed25519

    return isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)


def self_signed_pem_pair(common_name: str, *, ca: bool | None = None) -> tuple[bytes, bytes]:
    """``(key PEM, certificate PEM)`` of a fresh P-256 self-signed certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = self_signed(key, common_name, ca=ca)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)
