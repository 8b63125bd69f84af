"""The SEV-SNP ``ATTESTATION_REPORT`` structure (AMD SEV-SNP ABI, table "ATTESTATION_REPORT").

The report is 1184 bytes (0x4A0), little-endian. Bytes 0x000-0x29F are signed (ECDSA P-384 over
SHA-384) by the V[CL]EK; the signature follows at 0x2A0 as R[72] then S[72], each a
little-endian integer zero-padded to 72 bytes, and the rest of the 512-byte signature field is
reserved. Every field is declared once in ``FIELDS`` (offset, size) and every length is
checked before a read. Fields that exist only in later report versions (CPUID bytes from
version 3, mitigation vectors from version 5) are ``None`` on older reports.

Parsing checks shape only; ``verify`` checks meaning. A report with reserved bytes set, an
unknown version or signing-key value parses (so an operator can look at it) and is rejected by
the verifier, which lists those findings with every other failed check.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from constellation.attestation.snp.errors import MalformedReportError
from constellation.attestation.snp.products import TURIN, product_from_cpuid
from constellation.attestation.snp.tcb import TcbVersion

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
SIGNATURE_OFFSET = 0x2A0
SIGNATURE_COMPONENT_SIZE = 72  # R and S are each zero-padded to 72 bytes
P384_SCALAR_SIZE = 48
SIGNATURE_ALGO_ECDSA_P384_SHA384 = 1

# name -> (offset, size). Integers are little-endian of that size.
FIELDS: dict[str, tuple[int, int]] = {
    "version": (0x000, 4),
    "guest_svn": (0x004, 4),
    "policy": (0x008, 8),
    "family_id": (0x010, 16),
    "image_id": (0x020, 16),
    "vmpl": (0x030, 4),
    "signature_algo": (0x034, 4),
    "current_tcb": (0x038, 8),
    "platform_info": (0x040, 8),
    "signer_info": (0x048, 4),
    "report_data": (0x050, 64),
    "measurement": (0x090, 48),
    "host_data": (0x0C0, 32),
    "id_key_digest": (0x0E0, 48),
    "author_key_digest": (0x110, 48),
    "report_id": (0x140, 32),
    "report_id_ma": (0x160, 32),
    "reported_tcb": (0x180, 8),
    "cpuid_family": (0x188, 1),
    "cpuid_model": (0x189, 1),
    "cpuid_stepping": (0x18A, 1),
    "chip_id": (0x1A0, 64),
    "committed_tcb": (0x1E0, 8),
    "current_build": (0x1E8, 1),
    "current_minor": (0x1E9, 1),
    "current_major": (0x1EA, 1),
    "committed_build": (0x1EC, 1),
    "committed_minor": (0x1ED, 1),
    "committed_major": (0x1EE, 1),
    "launch_tcb": (0x1F0, 8),
    "launch_mit_vector": (0x1F8, 8),
    "current_mit_vector": (0x200, 8),
    "signature_r": (SIGNATURE_OFFSET, SIGNATURE_COMPONENT_SIZE),
    "signature_s": (SIGNATURE_OFFSET + SIGNATURE_COMPONENT_SIZE, SIGNATURE_COMPONENT_SIZE),
}

# Reserved (must-be-zero) byte ranges [start, end) per report version. The signature field's
# tail is unsigned, so it must be zero too: otherwise one signed report has many encodings.
_SIGNATURE_TAIL = (SIGNATURE_OFFSET + 2 * SIGNATURE_COMPONENT_SIZE, REPORT_SIZE)
_COMMON_RESERVED: tuple[tuple[int, int], ...] = (
    (0x04C, 0x050),
    (0x1EB, 0x1EC),
    (0x1EF, 0x1F0),
    _SIGNATURE_TAIL,
)
RESERVED_RANGES: dict[int, tuple[tuple[int, int], ...]] = {
    2: (*_COMMON_RESERVED, (0x188, 0x1A0), (0x1F8, SIGNED_SIZE)),
    3: (*_COMMON_RESERVED, (0x18B, 0x1A0), (0x1F8, SIGNED_SIZE)),
    4: (*_COMMON_RESERVED, (0x18B, 0x1A0), (0x1F8, SIGNED_SIZE)),
    5: (*_COMMON_RESERVED, (0x18B, 0x1A0), (0x208, SIGNED_SIZE)),
}
SUPPORTED_VERSIONS = frozenset(RESERVED_RANGES)
CPUID_MIN_VERSION = 3
MIT_VECTOR_MIN_VERSION = 5

# Guest policy bits (POLICY field).
POLICY_ABI_MINOR_MASK = 0xFF
POLICY_ABI_MAJOR_SHIFT = 8
POLICY_SMT = 1 << 16
POLICY_RESERVED_ONE = 1 << 17  # "must be one" in every ABI version
POLICY_MIGRATE_MA = 1 << 18
POLICY_DEBUG = 1 << 19
POLICY_SINGLE_SOCKET = 1 << 20

# SIGNER_INFO bits.
SIGNER_AUTHOR_KEY_EN = 1 << 0
SIGNER_MASK_CHIP_KEY = 1 << 1  # the report is not signed (signature all zero)
SIGNER_KEY_SHIFT = 2
SIGNER_KEY_MASK = 0b111
SIGNING_KEYS: dict[int, str] = {0: "vcek", 1: "vlek", 7: "none"}

# A REPORT_ID_MA of all ones means "no migration agent bound".
NO_MIGRATION_AGENT = b"\xff" * 32


# Integer fields of these sizes unpack natively; everything else is bytes (R and S are
# 72-byte integers, converted after unpacking).
_STRUCT_INT_CODES = {1: "B", 4: "I", 8: "Q"}
_BYTE_FIELDS = frozenset(
    {
        "family_id",
        "image_id",
        "report_data",
        "measurement",
        "host_data",
        "id_key_digest",
        "author_key_digest",
        "report_id",
        "report_id_ma",
        "chip_id",
        "signature_r",
        "signature_s",
    }
)


def _layout_struct() -> tuple[struct.Struct, tuple[str, ...]]:
    """One ``struct`` format covering every field in offset order (gaps as padding)."""
    fmt, names, cursor = "<", [], 0
    for name, (offset, size) in sorted(FIELDS.items(), key=lambda item: item[1][0]):
        if offset < cursor:
            raise AssertionError(f"report field {name} overlaps its predecessor")
        fmt += f"{offset - cursor}x" if offset > cursor else ""
        fmt += f"{size}s" if name in _BYTE_FIELDS else _STRUCT_INT_CODES[size]
        names.append(name)
        cursor = offset + size
    return struct.Struct(fmt), tuple(names)


_LAYOUT, _LAYOUT_NAMES = _layout_struct()


@dataclass(frozen=True)
class GuestPolicy:
    """The decoded guest POLICY bits the verifier cares about."""

    raw: int

    @property
    def abi_minor(self) -> int:
        return self.raw & POLICY_ABI_MINOR_MASK

    @property
    def abi_major(self) -> int:
        return (self.raw >> POLICY_ABI_MAJOR_SHIFT) & 0xFF

    @property
    def smt(self) -> bool:
        return bool(self.raw & POLICY_SMT)

    @property
    def migrate_ma(self) -> bool:
        return bool(self.raw & POLICY_MIGRATE_MA)

    @property
    def debug(self) -> bool:
        return bool(self.raw & POLICY_DEBUG)

    @property
    def single_socket(self) -> bool:
        return bool(self.raw & POLICY_SINGLE_SOCKET)


@dataclass(frozen=True)
class Report:
    """A parsed SEV-SNP attestation report. ``raw`` keeps the exact 1184 bytes."""

    raw: bytes
    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: TcbVersion
    platform_info: int
    signer_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: TcbVersion
    cpuid_family: int | None
    cpuid_model: int | None
    cpuid_stepping: int | None
    chip_id: bytes
    committed_tcb: TcbVersion
    current_build: int
    current_minor: int
    current_major: int
    committed_build: int
    committed_minor: int
    committed_major: int
    launch_tcb: TcbVersion
    launch_mit_vector: int | None
    current_mit_vector: int | None
    signature_r: int
    signature_s: int

    @property
    def signed_bytes(self) -> bytes:
        """Bytes 0x000-0x29F: what the V[CL]EK signature covers."""
        return self.raw[:SIGNED_SIZE]

    @property
    def guest_policy(self) -> GuestPolicy:
        return GuestPolicy(self.policy)

    @property
    def signing_key(self) -> int:
        """The raw SIGNING_KEY value (bits 2-4 of SIGNER_INFO)."""
        return (self.signer_info >> SIGNER_KEY_SHIFT) & SIGNER_KEY_MASK

    @property
    def signer(self) -> str:
        """``"vcek"``, ``"vlek"``, ``"none"`` or ``"reserved(<n>)"``."""
        return SIGNING_KEYS.get(self.signing_key, f"reserved({self.signing_key})")

    @property
    def author_key_en(self) -> bool:
        return bool(self.signer_info & SIGNER_AUTHOR_KEY_EN)

    @property
    def mask_chip_key(self) -> bool:
        return bool(self.signer_info & SIGNER_MASK_CHIP_KEY)

    @property
    def chip_id_masked(self) -> bool:
        """The platform runs with MASK_CHIP_ID: firmware reports CHIP_ID as zeros."""
        return not any(self.chip_id)

    @property
    def product(self) -> str | None:
        """The product line named by CPUID (version 3+), else ``None``."""
        if self.cpuid_family is None or self.cpuid_model is None:
            return None
        return product_from_cpuid(self.cpuid_family, self.cpuid_model)

    @property
    def current_firmware(self) -> str:
        return f"{self.current_major}.{self.current_minor} build {self.current_build}"

    @property
    def committed_firmware(self) -> str:
        return f"{self.committed_major}.{self.committed_minor} build {self.committed_build}"

    def reserved_violations(self) -> list[str]:
        """Hex ranges of must-be-zero bytes that are not zero (empty for unknown versions)."""
        found = []
        for start, end in RESERVED_RANGES.get(self.version, ()):
            if any(self.raw[start:end]):
                found.append(f"{start:#05x}-{end - 1:#05x}")
        return found

    def to_dict(self) -> dict[str, Any]:
        """Public fields rendered for JSON (bytes as hex, TCBs as components and raw)."""

        def tcb(value: TcbVersion) -> dict[str, Any]:
            return {"raw": f"{value.raw:#018x}", **value.components()}

        return {
            "version": self.version,
            "guest_svn": self.guest_svn,
            "policy": f"{self.policy:#x}",
            "debug": self.guest_policy.debug,
            "migrate_ma": self.guest_policy.migrate_ma,
            "smt": self.guest_policy.smt,
            "family_id": self.family_id.hex(),
            "image_id": self.image_id.hex(),
            "vmpl": self.vmpl,
            "signature_algo": self.signature_algo,
            "current_tcb": tcb(self.current_tcb),
            "reported_tcb": tcb(self.reported_tcb),
            "committed_tcb": tcb(self.committed_tcb),
            "launch_tcb": tcb(self.launch_tcb),
            "platform_info": f"{self.platform_info:#x}",
            "signer": self.signer,
            "author_key_en": self.author_key_en,
            "report_data": self.report_data.hex(),
            "measurement": self.measurement.hex(),
            "host_data": self.host_data.hex(),
            "id_key_digest": self.id_key_digest.hex(),
            "author_key_digest": self.author_key_digest.hex(),
            "report_id": self.report_id.hex(),
            "report_id_ma": self.report_id_ma.hex(),
            "chip_id": self.chip_id.hex(),
            "cpuid": None
            if self.cpuid_family is None
            else {
                "family": self.cpuid_family,
                "model": self.cpuid_model,
                "stepping": self.cpuid_stepping,
            },
            "product": self.product,
            "current_firmware": self.current_firmware,
            "committed_firmware": self.committed_firmware,
        }


def report_bytes(data: bytes) -> bytes:
    """Raw report bytes, or the decoding of a base64 text file holding them.

    Operators get reports both ways (the raw 1184 bytes from the guest device, or base64 from
    logs and APIs). Anything that is not base64 of at least a report's size is returned as is,
    so the parser, not this guess, decides whether it is a report.
    """
    text = b"".join(data.split())
    if text.isascii():
        try:
            decoded = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return data
        if len(decoded) >= REPORT_SIZE:
            return decoded
    return data


def parse_report(raw: bytes, *, product: str | None = None) -> Report:
    """Parse an SEV-SNP report; bytes after the first 1184 are ignored.

    ``product`` forces the TCB layout; otherwise a version 3+ report's CPUID decides it (a
    version 2 report predates Turin and always uses the Milan/Genoa layout). Raises
    ``MalformedReportError`` when the input is shorter than a report.
    """
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise MalformedReportError(f"an SEV-SNP report is bytes, got {type(raw).__name__}")
    data = bytes(raw[:REPORT_SIZE])
    if len(data) < REPORT_SIZE:
        raise MalformedReportError(
            f"an SEV-SNP report is {REPORT_SIZE} bytes, got {len(data)}: truncated or not a report"
        )
    values = dict(zip(_LAYOUT_NAMES, _LAYOUT.unpack_from(data), strict=True))
    version = values["version"]
    if version < CPUID_MIN_VERSION:
        values["cpuid_family"] = values["cpuid_model"] = values["cpuid_stepping"] = None
    if version < MIT_VECTOR_MIN_VERSION:
        values["launch_mit_vector"] = values["current_mit_vector"] = None
    if product is None and values["cpuid_family"] is not None:
        product = product_from_cpuid(values["cpuid_family"], values["cpuid_model"])
    turin = product == TURIN
    for name in ("current_tcb", "reported_tcb", "committed_tcb", "launch_tcb"):
        values[name] = TcbVersion(values[name], turin=turin)
    for name in ("signature_r", "signature_s"):
        values[name] = int.from_bytes(values[name], "little")
    return Report(raw=data, **values)


def signature_der(report: Report) -> bytes | None:
    """The report signature as a DER ECDSA signature, or ``None`` if R or S exceed 48 bytes.

    The unused high bytes of the 72-byte fields must be zero; a value that does not fit a
    P-384 scalar cannot be a valid signature, and refusing it keeps the encoding unique.
    """
    limit = 1 << (8 * P384_SCALAR_SIZE)
    if report.signature_r >= limit or report.signature_s >= limit:
        return None
    return encode_dss_signature(report.signature_r, report.signature_s)


__all__ = [
    "FIELDS",
    "REPORT_SIZE",
    "SIGNED_SIZE",
    "GuestPolicy",
    "Report",
    "parse_report",
    "signature_der",
]
