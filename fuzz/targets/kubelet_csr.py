"""A joining node's kubelet CSR (PEM PKCS#10), as the JoinService checks and signs it.

Input starting with ``-----BEGIN`` is used as the PEM text; any other input is taken as DER and
wrapped in PEM armor, so that the fuzzer works on the ASN.1 structure instead of base64.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from constellation.joinservice.kubelet_cert import SigningCA, check_kubelet_csr, sign_kubelet_csr

NODE = "worker-0"
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _ca() -> SigningCA:
    key = ec.derive_private_key(0x5EED, ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return SigningCA(certificate=certificate, key=key)


CA = _ca()


def pem_of(der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return (
        b"-----BEGIN CERTIFICATE REQUEST-----\n"
        + b"\n".join(lines)
        + b"\n-----END CERTIFICATE REQUEST-----\n"
    )


def _csr(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, *, sans: bool) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{NODE}"),
            ]
        )
    )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("10.0.0.4")), x509.DNSName("worker-0")]
            ),
            critical=False,
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def seeds() -> Iterator[bytes]:
    ec_key = ec.derive_private_key(0xC5, ec.SECP256R1())
    der = _csr(ec_key, sans=False)
    yield der
    yield pem_of(der)
    yield _csr(ec_key, sans=True)
    yield _csr(ec.derive_private_key(0xC6, ec.SECP384R1()), sans=False)
    yield _csr(rsa.generate_private_key(65537, 2048), sans=True)


def target(data: bytes) -> None:
    pem = data if data.startswith(b"-----BEGIN") else pem_of(data)
    check_kubelet_csr(pem)
    sign_kubelet_csr(pem, CA, node_name=NODE, now=NOW)
