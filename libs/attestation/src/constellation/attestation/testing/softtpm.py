"""A software "TPM" for tests: TPM structures laid out byte for byte and really signed.

Two kinds of tests need structures no real TPM would produce:

- the parser and quote checks (``tpm.py``), which must be driven through every field, and
- the tamper suite, whose attacker has no TPM at all: a software key that merely *claims* the
  attributes of a TPM-resident attestation key (fixedTPM, restricted, sign), PCR values and an
  event log copied from a real node's public evidence, and a quote it signs itself.

Nothing here is used by the product; it lives in ``testing`` so every package's tests (and the
e2e tamper suite) build forgeries the same way instead of each carrying a copy.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from constellation.attestation.tpm import (
    AK_REQUIRED_ATTRIBUTES,
    TPM_ALG_ECC,
    TPM_ALG_ECDSA,
    TPM_ALG_NULL,
    TPM_ALG_RSA,
    TPM_ALG_RSASSA,
    TPM_ALG_SHA256,
    TPM_ECC_NIST_P256,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_QUOTE,
    parse_tpmt_public,
    pcr_digest,
)
from constellation.attestation.vtpm import DOCUMENT_VERSION, QEMU_VTPM, qualifying_data

ALL_PCRS = tuple(range(24))


def tpm2b(data: bytes) -> bytes:
    """A TPM2B: big-endian u16 size, then the bytes."""
    return struct.pack(">H", len(data)) + data


def ecc_public(key: ec.EllipticCurvePrivateKey, attributes: int = AK_REQUIRED_ATTRIBUTES) -> bytes:
    """A TPMT_PUBLIC for a P-256 ECDSA signing key with the given (claimed) attributes."""
    numbers = key.public_key().public_numbers()
    return (
        struct.pack(">HHI", TPM_ALG_ECC, TPM_ALG_SHA256, attributes)
        + tpm2b(b"")
        + struct.pack(
            ">HHHHH", TPM_ALG_NULL, TPM_ALG_ECDSA, TPM_ALG_SHA256, TPM_ECC_NIST_P256, TPM_ALG_NULL
        )
        + tpm2b(numbers.x.to_bytes(32, "big"))
        + tpm2b(numbers.y.to_bytes(32, "big"))
    )


def rsa_public(key: rsa.RSAPrivateKey, attributes: int = AK_REQUIRED_ATTRIBUTES) -> bytes:
    """A TPMT_PUBLIC for an RSA-2048 RSASSA signing key."""
    numbers = key.public_key().public_numbers()
    return (
        struct.pack(">HHI", TPM_ALG_RSA, TPM_ALG_SHA256, attributes)
        + tpm2b(b"")
        + struct.pack(">HHHHI", TPM_ALG_NULL, TPM_ALG_RSASSA, TPM_ALG_SHA256, 2048, 0)
        + tpm2b(numbers.n.to_bytes(256, "big"))
    )


def selection(bank: int, pcrs: Sequence[int]) -> bytes:
    """A TPML_PCR_SELECTION with one bank selecting ``pcrs`` (3-byte bitmap)."""
    bitmap = bytearray(3)
    for i in pcrs:
        bitmap[i // 8] |= 1 << (i % 8)
    return struct.pack(">IHB", 1, bank, 3) + bytes(bitmap)


def attest(
    extra: bytes,
    pcrs: Mapping[int, bytes],
    *,
    bank: int = TPM_ALG_SHA256,
    selected: Sequence[int] | None = None,
    digest: bytes | None = None,
    clock: int = 1234,
) -> bytes:
    """A TPMS_ATTEST quote over ``selected`` PCRs (default 0..23) with qualifying data ``extra``."""
    chosen = list(ALL_PCRS) if selected is None else list(selected)
    if digest is None:
        digest = pcr_digest(pcrs, chosen, TPM_ALG_SHA256)
    return (
        struct.pack(">IH", TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE)
        + tpm2b(b"\x00\x0b" + bytes(32))
        + tpm2b(extra)
        + struct.pack(">QIIB", clock, 1, 0, 1)
        + struct.pack(">Q", 0x20191023)
        + selection(bank, chosen)
        + tpm2b(digest)
    )


def ecdsa_signature(
    key: ec.EllipticCurvePrivateKey, data: bytes, hash_alg: int = TPM_ALG_SHA256
) -> bytes:
    """A TPMT_SIGNATURE (ECDSA) over ``data``."""
    algorithm = hashes.SHA256() if hash_alg == TPM_ALG_SHA256 else hashes.SHA1()  # noqa: S303 (a weak TPM signature)
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(algorithm)))
    return (
        struct.pack(">HH", TPM_ALG_ECDSA, hash_alg)
        + tpm2b(r.to_bytes(32, "big"))
        + tpm2b(s.to_bytes(32, "big"))
    )


def rsassa_signature(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    """A TPMT_SIGNATURE (RSASSA-PKCS1v1.5, SHA-256) over ``data``."""
    blob = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return struct.pack(">HH", TPM_ALG_RSASSA, TPM_ALG_SHA256) + tpm2b(blob)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class SoftwareTpmIssuer:
    """An ``Issuer`` without a TPM: a software AK that signs quotes over PCRs it was told.

    This is the attacker of issue 10's worst finding: it claims TPM attributes, copies the
    public PCR values and event log of a genuine node, and may attach any AK certificate it
    got hold of (a genuine node's, one it signed itself). Every field can be overridden to
    produce the other forgeries of the tamper suite.
    """

    pcrs: Mapping[int, bytes]
    event_log: bytes | None = None
    ak_certificate: bytes | None = None
    variant: str = QEMU_VTPM
    instance_info: bytes = b""
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    attributes: int = AK_REQUIRED_ATTRIBUTES

    @property
    def ak_public(self) -> bytes:
        return ecc_public(self.key, self.attributes)

    @property
    def ak_spki_der(self) -> bytes:
        return parse_tpmt_public(self.ak_public).spki_der()

    def document(self, user_data: bytes, nonce: bytes) -> dict[str, Any]:
        """The evidence document as a dict, for tests that tamper with it further."""
        quote = attest(qualifying_data(self.instance_info, user_data, nonce), self.pcrs)
        return {
            "version": DOCUMENT_VERSION,
            "variant": self.variant,
            "user_data": _b64(user_data),
            "instance_info": _b64(self.instance_info),
            "ak_public": _b64(self.ak_public),
            "ak_certificate": None if self.ak_certificate is None else _b64(self.ak_certificate),
            "quotes": [
                {"attest": _b64(quote), "signature": _b64(ecdsa_signature(self.key, quote))}
            ],
            "pcrs": {str(i): _b64(self.pcrs[i]) for i in sorted(self.pcrs)},
            "event_log": None if self.event_log is None else _b64(self.event_log),
        }

    def issue(self, user_data: bytes, nonce: bytes) -> bytes:
        return json.dumps(self.document(user_data, nonce), sort_keys=True).encode()


def public_facts(document: bytes) -> tuple[dict[int, bytes], bytes | None, bytes | None]:
    """What anyone can copy from a node's published evidence: PCRs, event log, AK certificate."""
    doc = json.loads(document)
    pcrs = {int(k): base64.b64decode(v) for k, v in doc["pcrs"].items()}
    log = doc.get("event_log")
    cert = doc.get("ak_certificate")
    return (
        pcrs,
        None if log is None else base64.b64decode(log),
        None if cert is None else base64.b64decode(cert),
    )
