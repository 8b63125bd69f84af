"""Forged AK certificates for the identity tests (loaded by path: the test tree is no package).

Forgeries need what ``PlatformCA`` deliberately cannot make (CA=true AK certificates, a missing
EKU, duplicated extensions, X.509 v1), so ``ak_certificate`` below builds AK-profile
certificates field by field and ``resign`` edits the DER of a to-be-signed certificate and
signs it again with the CA's key, as an attacker holding some CA key would.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from constellation.attestation.identity import Role
from constellation.attestation.identity.ca import PlatformCA
from constellation.attestation.identity.profile import (
    AK_CERTIFICATE_EKU,
    NODE_ROLE_OID,
    PLATFORM_ORGANIZATION,
    encode_role,
)

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def spki(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def ca_key_of(ca: PlatformCA) -> PrivateKey:
    key = serialization.load_pem_private_key(ca.key_pem.reveal(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    return key


def key_usage(*, digital_signature: bool = True, key_cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def ak_certificate(
    ca: PlatformCA,
    ak: PrivateKey,
    *,
    names: tuple[str, ...] = ("worker-0",),
    role: bytes | None = encode_role(Role.WORKER),
    eku: tuple[x509.ObjectIdentifier, ...] | None = (AK_CERTIFICATE_EKU,),
    ca_flag: bool | None = False,
    usage: x509.KeyUsage | None = None,
    extra: tuple[tuple[x509.ExtensionType, bool], ...] = (),
    not_before: datetime = NOW - timedelta(days=1),
    not_after: datetime = NOW + timedelta(days=365),
    issuer: x509.Name | None = None,
    signer: PrivateKey | None = None,
) -> bytes:
    """An AK-profile certificate with any field changed; ``None`` leaves an extension out."""
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, n) for n in names]
    subject.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, PLATFORM_ORGANIZATION))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(issuer or ca.certificate.subject)
        .public_key(ak.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if ca_flag is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca_flag, path_length=None), critical=True
        )
    builder = builder.add_extension(usage or key_usage(), critical=True)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if role is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(NODE_ROLE_OID, role), critical=False
        )
    for extension, critical in extra:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signer or ca_key_of(ca), hashes.SHA256()).public_bytes(
        serialization.Encoding.DER
    )


# --- minimal DER, to edit a to-be-signed certificate and sign it again ------------------------
def _length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _length(len(content)) + content


def _read(data: bytes, at: int) -> tuple[int, int]:
    """(start of content, end of content) of the TLV at ``at`` (DER definite lengths only)."""
    first = data[at + 1]
    if first < 0x80:
        return at + 2, at + 2 + first
    count = first & 0x7F
    start = at + 2 + count
    return start, start + int.from_bytes(data[at + 2 : start], "big")


def elements(der: bytes) -> list[bytes]:
    """The encoded TLVs directly inside the constructed value ``der``."""
    at, end = _read(der, 0)
    items = []
    while at < end:
        _, item_end = _read(der, at)
        items.append(der[at:item_end])
        at = item_end
    return items


def resign(cert_der: bytes, key: PrivateKey, edit: Callable[[list[bytes]], list[bytes]]) -> bytes:
    """``cert_der`` with its TBS elements changed by ``edit`` and signed again by ``key``."""
    tbs, algorithm, _ = elements(cert_der)
    new_tbs = tlv(0x30, b"".join(edit(elements(tbs))))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    else:
        from cryptography.hazmat.primitives.asymmetric import padding

        signature = key.sign(new_tbs, padding.PKCS1v15(), hashes.SHA256())
    return tlv(0x30, new_tbs + algorithm + tlv(0x03, b"\x00" + signature))
