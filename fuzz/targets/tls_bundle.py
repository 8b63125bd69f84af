"""The KeyService's and JoinService's mounted TLS files (certificate, key, CA), as
``service.tlsbundle.check_tls_bundle`` checks them at start-up; and a caller certificate as
the KeyService's caller check reads it. The three PEM files are separated by ``SEPARATOR``.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from constellation.attestation.service.tlsbundle import BundleNames, check_tls_bundle
from constellation.keyservice.tls import check_caller

SEPARATOR = b"\n--8<--\n"
NOW = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
NAMES = BundleNames("tls.cert", "tls.key", "tls.ca")
PEM = serialization.Encoding.PEM


def _bundle() -> list[bytes]:
    ca_key = ec.derive_private_key(0xCA, ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "service CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.derive_private_key(0x5E, ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "constellation-joinservice")])
        )
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return [cert.public_bytes(PEM), key_pem, ca.public_bytes(PEM)]


def seeds() -> Iterator[bytes]:
    yield SEPARATOR.join(_bundle())


def target(data: bytes) -> None:
    parts = data.split(SEPARATOR, 2)
    parts += [b""] * (3 - len(parts))
    check_tls_bundle(*parts, usage=ExtendedKeyUsageOID.SERVER_AUTH, names=NAMES, now=NOW)
    check_caller(parts[0])
