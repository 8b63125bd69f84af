"""How each cloud variant binds its attestation key (AK) into REPORT_DATA (DESIGN.md §4.1).

The SNP report proves what ran; REPORT_DATA ties the report to the vTPM AK that signs the
quote, so the quote inherits the hardware root of trust. Each binding is a ``ReportCheck``
(pure, composable into ``Policy.checks``):

* Azure: the HCL writes a runtime-data JSON; REPORT_DATA[0:32] = SHA-256 of its exact bytes,
  REPORT_DATA[32:64] = zeros, and its ``keys`` entry with ``kid == "HCLAkPub"`` (an RSA JWK)
  must equal the AK.
* AWS: REPORT_DATA = SHA-512 of the DER SubjectPublicKeyInfo of the AK.
* GCP: REPORT_DATA = the 32-byte extra data, zero-padded to 64 bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from constellation.attestation.boundedparse import loads_json
from constellation.attestation.errors import Failure, MalformedEvidenceError
from constellation.attestation.snp.policy import REPORT_DATA_SIZE
from constellation.attestation.snp.report import Report

AZURE_AK_KID = "HCLAkPub"
SHA256_SIZE = 32
GCP_EXTRA_DATA_SIZE = 32
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def _b64url_int(value: Any, name: str) -> int:
    if not isinstance(value, str) or not _BASE64URL.fullmatch(value):
        raise MalformedEvidenceError(f"HCLAkPub.{name} is not an unpadded base64url string")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise MalformedEvidenceError(f"HCLAkPub.{name} is not valid base64url") from None
    return int.from_bytes(raw, "big")


@dataclass(frozen=True)
class HclRuntimeData:
    """The parts of Azure's HCL runtime data the binding needs."""

    raw: bytes = field(repr=False)
    ak_modulus: int
    ak_exponent: int

    @property
    def ak_public_key(self) -> rsa.RSAPublicKey:
        return rsa.RSAPublicNumbers(self.ak_exponent, self.ak_modulus).public_key()


def parse_hcl_runtime_data(raw: bytes) -> HclRuntimeData:
    """Decode the runtime-data JSON and its ``HCLAkPub`` RSA JWK (``MalformedEvidenceError``)."""
    document = loads_json(raw, error=MalformedEvidenceError, what="HCL runtime data")
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise MalformedEvidenceError("HCL runtime data has no 'keys' list")
    matches = [k for k in keys if isinstance(k, dict) and k.get("kid") == AZURE_AK_KID]
    if len(matches) != 1:
        raise MalformedEvidenceError(
            f"HCL runtime data has {len(matches)} '{AZURE_AK_KID}' keys, expected 1"
        )
    jwk = matches[0]
    if jwk.get("kty") != "RSA":
        raise MalformedEvidenceError(f"{AZURE_AK_KID} has kty {jwk.get('kty')!r}, expected 'RSA'")
    return HclRuntimeData(
        bytes(raw), _b64url_int(jwk.get("n"), "n"), _b64url_int(jwk.get("e"), "e")
    )


@dataclass(frozen=True)
class AzureRuntimeDataBinding:
    """REPORT_DATA commits to the HCL runtime data, which names ``ak_public_key``."""

    runtime_data: bytes = field(repr=False)
    ak_public_key: rsa.RSAPublicKey = field(repr=False)

    def check(self, report: Report) -> list[Failure]:
        found = []
        digest = hashlib.sha256(self.runtime_data).digest()
        if report.report_data[:SHA256_SIZE] != digest:
            found.append(
                Failure(
                    "snp.azure.runtime_data",
                    f"REPORT_DATA[0:32] = SHA-256(runtime data) = {digest.hex()}",
                    report.report_data[:SHA256_SIZE].hex(),
                )
            )
        tail = report.report_data[SHA256_SIZE:]
        if any(tail):
            found.append(
                Failure("snp.azure.report_data_tail", "REPORT_DATA[32:64] zero", tail.hex())
            )
        try:
            parsed = parse_hcl_runtime_data(self.runtime_data)
        except MalformedEvidenceError as err:
            found.append(
                Failure("snp.azure.ak", f"an {AZURE_AK_KID} RSA key in the runtime data", str(err))
            )
            return found
        numbers = self.ak_public_key.public_numbers()
        if (numbers.n, numbers.e) != (parsed.ak_modulus, parsed.ak_exponent):
            found.append(
                Failure(
                    "snp.azure.ak",
                    f"{AZURE_AK_KID} equal to the quote's AK (n sha256:{_modulus_id(numbers.n)})",
                    f"n sha256:{_modulus_id(parsed.ak_modulus)}, e={parsed.ak_exponent}",
                )
            )
        return found


def _modulus_id(n: int) -> str:
    return hashlib.sha256(n.to_bytes((n.bit_length() + 7) // 8, "big")).hexdigest()[:16]


def spki_der(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class AwsAkBinding:
    """REPORT_DATA = SHA-512(DER SubjectPublicKeyInfo of the AK)."""

    ak_spki_der: bytes

    @classmethod
    def for_key(cls, public_key: PublicKeyTypes) -> AwsAkBinding:
        return cls(spki_der(public_key))

    @property
    def expected_report_data(self) -> bytes:
        return hashlib.sha512(self.ak_spki_der).digest()

    def check(self, report: Report) -> list[Failure]:
        if report.report_data == self.expected_report_data:
            return []
        return [
            Failure(
                "snp.aws.report_data",
                f"SHA-512(AK SPKI) = {self.expected_report_data.hex()}",
                report.report_data.hex(),
            )
        ]


@dataclass(frozen=True)
class GcpExtraDataBinding:
    """REPORT_DATA = the 32-byte extra data followed by 32 zero bytes."""

    extra_data: bytes

    def __post_init__(self) -> None:
        if len(self.extra_data) != GCP_EXTRA_DATA_SIZE:
            raise ValueError(
                f"GCP extra data is {GCP_EXTRA_DATA_SIZE} bytes, got {len(self.extra_data)}"
            )

    @property
    def expected_report_data(self) -> bytes:
        return self.extra_data.ljust(REPORT_DATA_SIZE, b"\x00")

    def check(self, report: Report) -> list[Failure]:
        if report.report_data == self.expected_report_data:
            return []
        return [
            Failure(
                "snp.gcp.report_data", self.expected_report_data.hex(), report.report_data.hex()
            )
        ]
