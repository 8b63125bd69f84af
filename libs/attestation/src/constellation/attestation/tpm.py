"""Pure-Python parsing of TPM 2.0 structures and verification of a PCR quote.

Only what a quote needs is parsed (TPM 2.0 Library Part 2, big-endian throughout):

``TPMT_PUBLIC``      type u16, nameAlg u16, objectAttributes u32, authPolicy TPM2B,
                     parameters (ECC: symmetric, scheme, curveID u16, kdf; RSA: symmetric,
                     scheme, keyBits u16, exponent u32), unique (ECC: x TPM2B, y TPM2B;
                     RSA: modulus TPM2B)
``TPMS_ATTEST``      magic u32 (0xff544347), type u16 (0x8018 quote), qualifiedSigner TPM2B,
                     extraData TPM2B, clockInfo (17 bytes), firmwareVersion u64,
                     TPMS_QUOTE_INFO (TPML_PCR_SELECTION, pcrDigest TPM2B)
``TPMT_SIGNATURE``   sigAlg u16, hashAlg u16, then ECDSA r TPM2B, s TPM2B or RSASSA sig TPM2B

Every read checks the remaining length first; truncated, oversized or trailing input raises
``MalformedEvidenceError``. ``verify_quote`` never stops at the first problem: it returns the
parsed quote or raises ``ValidationError`` listing every failed check.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from constellation.attestation.errors import Failure, MalformedEvidenceError, ValidationError

# Algorithm identifiers (Part 2, TPM_ALG_ID).
TPM_ALG_RSA = 0x0001
TPM_ALG_SHA1 = 0x0004
TPM_ALG_SHA256 = 0x000B
TPM_ALG_SHA384 = 0x000C
TPM_ALG_SHA512 = 0x000D
TPM_ALG_NULL = 0x0010
TPM_ALG_RSASSA = 0x0014
TPM_ALG_ECDSA = 0x0018
TPM_ALG_ECC = 0x0023
TPM_ECC_NIST_P256 = 0x0003

HASH_SIZES: Mapping[int, int] = {
    TPM_ALG_SHA1: 20,
    TPM_ALG_SHA256: 32,
    TPM_ALG_SHA384: 48,
    TPM_ALG_SHA512: 64,
}
HASH_NAMES: Mapping[int, str] = {
    TPM_ALG_SHA1: "sha1",
    TPM_ALG_SHA256: "sha256",
    TPM_ALG_SHA384: "sha384",
    TPM_ALG_SHA512: "sha512",
}
_CRYPTO_HASHES: Mapping[int, type[hashes.HashAlgorithm]] = {
    TPM_ALG_SHA1: hashes.SHA1,
    TPM_ALG_SHA256: hashes.SHA256,
    TPM_ALG_SHA384: hashes.SHA384,
    TPM_ALG_SHA512: hashes.SHA512,
}

# TPMA_OBJECT bits.
TPMA_OBJECT_FIXEDTPM = 1 << 1
TPMA_OBJECT_FIXEDPARENT = 1 << 4
TPMA_OBJECT_SENSITIVEDATAORIGIN = 1 << 5
TPMA_OBJECT_RESTRICTED = 1 << 16
TPMA_OBJECT_DECRYPT = 1 << 17
TPMA_OBJECT_SIGN_ENCRYPT = 1 << 18
AK_REQUIRED_ATTRIBUTES = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_SIGN_ENCRYPT

TPM_GENERATED_VALUE = 0xFF544347
TPM_ST_ATTEST_QUOTE = 0x8018

# Field sizes.
U8 = 1
U16 = 2
U32 = 4
U64 = 8
CLOCK_INFO_SIZE = 8 + 4 + 4 + 1  # clock, resetCount, restartCount, safe
PCR_SELECT_MAX = 8  # sizeofSelect bytes; 3 covers PCRs 0..23, allow room for larger TPMs
PCR_SELECTION_MAX_BANKS = 16
PCR_COUNT = 24
RSA_DEFAULT_EXPONENT = 65537
SUPPORTED_RSA_BITS = (2048,)
P256_COORDINATE_SIZE = 32
# Upper bounds of TPM2B sizes (Part 2): no field may claim more than its type allows.
MAX_TPM2B_SIZE = 4096
MAX_DIGEST_SIZE = 64  # TPM2B_DIGEST / TPM2B_DATA: the largest hash (SHA-512)
MAX_NAME_SIZE = 2 + MAX_DIGEST_SIZE  # TPM2B_NAME: nameAlg || digest
MAX_ECC_PARAMETER_SIZE = 66  # TPM2B_ECC_PARAMETER: P-521
MAX_RSA_KEY_BYTES = 512  # TPM2B_PUBLIC_KEY_RSA: RSA-4096


class _Reader:
    """A bounds-checked big-endian cursor over bytes."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = memoryview(bytes(data))
        self._pos = 0
        self._what = what

    def take(self, size: int, field: str) -> bytes:
        if size < 0 or self._pos + size > len(self._data):
            raise MalformedEvidenceError(
                f"{self._what}: truncated at {field} (need {size} bytes at offset {self._pos}, "
                f"have {len(self._data) - self._pos})"
            )
        chunk = bytes(self._data[self._pos : self._pos + size])
        self._pos += size
        return chunk

    def u8(self, field: str) -> int:
        return self.take(U8, field)[0]

    def u16(self, field: str) -> int:
        return int(struct.unpack(">H", self.take(U16, field))[0])

    def u32(self, field: str) -> int:
        return int(struct.unpack(">I", self.take(U32, field))[0])

    def u64(self, field: str) -> int:
        return int(struct.unpack(">Q", self.take(U64, field))[0])

    def tpm2b(self, field: str, max_size: int = MAX_TPM2B_SIZE) -> bytes:
        size = self.u16(f"{field}.size")
        if size > max_size:
            raise MalformedEvidenceError(
                f"{self._what}: {field} claims {size} bytes, at most {max_size} allowed"
            )
        return self.take(size, field)

    def end(self) -> None:
        if self._pos != len(self._data):
            raise MalformedEvidenceError(
                f"{self._what}: {len(self._data) - self._pos} unexpected trailing bytes"
            )

    @property
    def offset(self) -> int:
        return self._pos


# --------------------------------------------------------------------------------------------
# TPMT_PUBLIC


@dataclass(frozen=True)
class TpmPublic:
    """A parsed ``TPMT_PUBLIC`` of an ECC P-256 or RSA-2048 signing key."""

    raw: bytes
    type: int
    name_alg: int
    attributes: int
    scheme: int
    scheme_hash: int
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey

    @property
    def name(self) -> bytes:
        """The TPM name: ``nameAlg || H_nameAlg(TPMT_PUBLIC)``."""
        digest = hashlib.new(HASH_NAMES[self.name_alg], self.raw).digest()
        return struct.pack(">H", self.name_alg) + digest

    def spki_der(self) -> bytes:
        """DER SubjectPublicKeyInfo, the form AK pins are kept in."""
        return self.public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def is_restricted_signing_key(self) -> bool:
        return (
            self.attributes & AK_REQUIRED_ATTRIBUTES == AK_REQUIRED_ATTRIBUTES
            and not self.attributes & TPMA_OBJECT_DECRYPT
        )


def _read_scheme(reader: _Reader, field: str) -> tuple[int, int]:
    scheme = reader.u16(f"{field}.scheme")
    if scheme == TPM_ALG_NULL:
        return scheme, TPM_ALG_NULL
    return scheme, reader.u16(f"{field}.hashAlg")


def _read_symmetric(reader: _Reader) -> None:
    algorithm = reader.u16("symmetric.algorithm")
    if algorithm != TPM_ALG_NULL:
        reader.u16("symmetric.keyBits")
        reader.u16("symmetric.mode")


def parse_tpmt_public(data: bytes) -> TpmPublic:
    """Parse a ``TPMT_PUBLIC`` (without a TPM2B size prefix) of an ECC P-256 or RSA-2048 key."""
    reader = _Reader(data, "TPMT_PUBLIC")
    key_type = reader.u16("type")
    name_alg = reader.u16("nameAlg")
    if name_alg not in HASH_SIZES:
        raise MalformedEvidenceError(f"TPMT_PUBLIC: unsupported nameAlg 0x{name_alg:04x}")
    attributes = reader.u32("objectAttributes")
    reader.tpm2b("authPolicy", max_size=MAX_DIGEST_SIZE)
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey
    if key_type == TPM_ALG_ECC:
        _read_symmetric(reader)
        scheme, scheme_hash = _read_scheme(reader, "eccScheme")
        curve = reader.u16("curveID")
        _read_scheme(reader, "kdf")
        x = reader.tpm2b("unique.x", max_size=P256_COORDINATE_SIZE)
        y = reader.tpm2b("unique.y", max_size=P256_COORDINATE_SIZE)
        reader.end()
        if curve != TPM_ECC_NIST_P256:
            raise MalformedEvidenceError(f"TPMT_PUBLIC: unsupported ECC curve 0x{curve:04x}")
        if len(x) != P256_COORDINATE_SIZE or len(y) != P256_COORDINATE_SIZE:
            raise MalformedEvidenceError("TPMT_PUBLIC: P-256 point coordinates must be 32 bytes")
        try:
            public_key = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
            ).public_key()
        except ValueError:
            raise MalformedEvidenceError("TPMT_PUBLIC: point is not on P-256") from None
    elif key_type == TPM_ALG_RSA:
        _read_symmetric(reader)
        scheme, scheme_hash = _read_scheme(reader, "rsaScheme")
        key_bits = reader.u16("keyBits")
        exponent = reader.u32("exponent") or RSA_DEFAULT_EXPONENT
        modulus = reader.tpm2b("unique.rsa", max_size=MAX_RSA_KEY_BYTES)
        reader.end()
        if key_bits not in SUPPORTED_RSA_BITS or len(modulus) * 8 != key_bits:
            raise MalformedEvidenceError(
                f"TPMT_PUBLIC: RSA key of {key_bits} bits with a {len(modulus)}-byte modulus "
                "(only RSA-2048 is supported)"
            )
        try:
            public_key = rsa.RSAPublicNumbers(exponent, int.from_bytes(modulus, "big")).public_key()
        except ValueError:
            raise MalformedEvidenceError("TPMT_PUBLIC: invalid RSA public key") from None
    else:
        raise MalformedEvidenceError(f"TPMT_PUBLIC: unsupported key type 0x{key_type:04x}")
    return TpmPublic(bytes(data), key_type, name_alg, attributes, scheme, scheme_hash, public_key)


# --------------------------------------------------------------------------------------------
# TPML_PCR_SELECTION


@dataclass(frozen=True)
class PcrSelection:
    """One bank of a ``TPML_PCR_SELECTION``: a hash algorithm and the selected indices."""

    hash_alg: int
    pcrs: tuple[int, ...]


def _read_pcr_selection(reader: _Reader) -> tuple[PcrSelection, ...]:
    count = reader.u32("pcrSelections.count")
    if count > PCR_SELECTION_MAX_BANKS:
        raise MalformedEvidenceError(f"TPML_PCR_SELECTION: {count} banks is implausible")
    banks: list[PcrSelection] = []
    for bank in range(count):
        hash_alg = reader.u16(f"pcrSelections[{bank}].hash")
        size = reader.u8(f"pcrSelections[{bank}].sizeofSelect")
        if size > PCR_SELECT_MAX:
            raise MalformedEvidenceError(f"TPML_PCR_SELECTION: sizeofSelect {size} too large")
        bitmap = reader.take(size, f"pcrSelections[{bank}].pcrSelect")
        selected = tuple(
            byte * 8 + bit for byte in range(size) for bit in range(8) if bitmap[byte] >> bit & 1
        )
        banks.append(PcrSelection(hash_alg, selected))
    return tuple(banks)


def parse_pcr_selection(data: bytes) -> tuple[PcrSelection, ...]:
    """Parse a standalone ``TPML_PCR_SELECTION``."""
    reader = _Reader(data, "TPML_PCR_SELECTION")
    banks = _read_pcr_selection(reader)
    reader.end()
    return banks


# --------------------------------------------------------------------------------------------
# TPMS_ATTEST


@dataclass(frozen=True)
class Attest:
    """A parsed quote ``TPMS_ATTEST``; ``raw`` are the signed bytes."""

    raw: bytes
    qualified_signer: bytes
    extra_data: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
    firmware_version: int
    pcr_selection: tuple[PcrSelection, ...]
    pcr_digest: bytes


def parse_attest(data: bytes) -> Attest:
    """Parse a quote ``TPMS_ATTEST`` (without a TPM2B size prefix)."""
    reader = _Reader(data, "TPMS_ATTEST")
    magic = reader.u32("magic")
    if magic != TPM_GENERATED_VALUE:
        raise MalformedEvidenceError(
            f"TPMS_ATTEST: magic 0x{magic:08x}, expected 0x{TPM_GENERATED_VALUE:08x}"
        )
    attest_type = reader.u16("type")
    if attest_type != TPM_ST_ATTEST_QUOTE:
        raise MalformedEvidenceError(
            f"TPMS_ATTEST: type 0x{attest_type:04x}, expected quote 0x{TPM_ST_ATTEST_QUOTE:04x}"
        )
    signer = reader.tpm2b("qualifiedSigner", max_size=MAX_NAME_SIZE)
    extra = reader.tpm2b("extraData", max_size=MAX_DIGEST_SIZE)
    clock = reader.u64("clockInfo.clock")
    reset_count = reader.u32("clockInfo.resetCount")
    restart_count = reader.u32("clockInfo.restartCount")
    safe = reader.u8("clockInfo.safe")
    firmware = reader.u64("firmwareVersion")
    selection = _read_pcr_selection(reader)
    digest = reader.tpm2b("pcrDigest", max_size=MAX_DIGEST_SIZE)
    reader.end()
    return Attest(
        bytes(data),
        signer,
        extra,
        clock,
        reset_count,
        restart_count,
        bool(safe),
        firmware,
        selection,
        digest,
    )


# --------------------------------------------------------------------------------------------
# TPMT_SIGNATURE


@dataclass(frozen=True)
class Signature:
    """A parsed ``TPMT_SIGNATURE`` (ECDSA ``r``/``s`` or an RSASSA-PKCS1-v1_5 blob)."""

    sig_alg: int
    hash_alg: int
    ecdsa_r: int = 0
    ecdsa_s: int = 0
    rsa_signature: bytes = b""


def parse_signature(data: bytes) -> Signature:
    """Parse a ``TPMT_SIGNATURE`` of scheme ECDSA or RSASSA."""
    reader = _Reader(data, "TPMT_SIGNATURE")
    sig_alg = reader.u16("sigAlg")
    if sig_alg == TPM_ALG_ECDSA:
        hash_alg = reader.u16("hash")
        r = reader.tpm2b("signatureR", max_size=MAX_ECC_PARAMETER_SIZE)
        s = reader.tpm2b("signatureS", max_size=MAX_ECC_PARAMETER_SIZE)
        reader.end()
        return Signature(sig_alg, hash_alg, int.from_bytes(r, "big"), int.from_bytes(s, "big"))
    if sig_alg == TPM_ALG_RSASSA:
        hash_alg = reader.u16("hash")
        blob = reader.tpm2b("sig", max_size=MAX_RSA_KEY_BYTES)
        reader.end()
        return Signature(sig_alg, hash_alg, rsa_signature=blob)
    raise MalformedEvidenceError(f"TPMT_SIGNATURE: unsupported signature scheme 0x{sig_alg:04x}")


# --------------------------------------------------------------------------------------------
# Quote verification


def pcr_digest(pcrs: Mapping[int, bytes], selection: Sequence[int], hash_alg: int) -> bytes:
    """``H(PCR[i0] || PCR[i1] || ...)`` over the selected PCRs in ascending order."""
    data = b"".join(pcrs[index] for index in sorted(selection))
    return hashlib.new(HASH_NAMES[hash_alg], data).digest()


def _signature_failure(ak: TpmPublic, attest: bytes, signature: Signature) -> Failure | None:
    hash_type = _CRYPTO_HASHES.get(signature.hash_alg)
    if hash_type is None:
        return Failure("quote.signature", "sha256/384/512", f"hash 0x{signature.hash_alg:04x}")
    try:
        if signature.sig_alg == TPM_ALG_ECDSA and isinstance(
            ak.public_key, ec.EllipticCurvePublicKey
        ):
            der = encode_dss_signature(signature.ecdsa_r, signature.ecdsa_s)
            ak.public_key.verify(der, attest, ec.ECDSA(hash_type()))
        elif signature.sig_alg == TPM_ALG_RSASSA and isinstance(ak.public_key, rsa.RSAPublicKey):
            ak.public_key.verify(signature.rsa_signature, attest, padding.PKCS1v15(), hash_type())
        else:
            return Failure(
                "quote.signature",
                "signature scheme matching the AK",
                f"scheme 0x{signature.sig_alg:04x} for key type 0x{ak.type:04x}",
            )
    except (InvalidSignature, ValueError):
        return Failure("quote.signature", "valid signature by the AK", "invalid signature")
    if signature.hash_alg == TPM_ALG_SHA1:
        return Failure("quote.signature", "a SHA-2 signature hash", "sha1")
    return None


def check_quote(
    ak: TpmPublic,
    attest: Attest,
    signature: Signature,
    pcrs: Mapping[int, bytes],
    qualifying_data: bytes,
    *,
    bank: int = TPM_ALG_SHA256,
) -> list[Failure]:
    """Every failed check of a parsed quote (empty when the quote is good).

    Checks: the AK is a restricted signing key, the signature verifies with ``ak`` over a SHA-2
    hash, ``extraData`` equals ``qualifying_data``, the selection is exactly one bank of the
    expected hash algorithm selecting exactly the PCRs supplied, and the quoted digest equals
    the digest of the supplied PCR values.
    """
    failures: list[Failure] = []
    if not ak.is_restricted_signing_key():
        failures.append(
            Failure(
                "ak.attributes",
                "fixedTPM|restricted|sign, not decrypt",
                f"0x{ak.attributes:08x}",
            )
        )
    sig_failure = _signature_failure(ak, attest.raw, signature)
    if sig_failure is not None:
        failures.append(sig_failure)
    if attest.extra_data != qualifying_data:
        failures.append(
            Failure(
                "quote.qualifying_data",
                qualifying_data.hex(),
                attest.extra_data.hex(),
                detail="evidence is not bound to this nonce and user data",
            )
        )
    bank_name = HASH_NAMES.get(bank, f"0x{bank:04x}")
    selected_banks = [s for s in attest.pcr_selection if s.pcrs]
    supplied = tuple(sorted(pcrs))
    if len(selected_banks) != 1 or selected_banks[0].hash_alg != bank:
        failures.append(
            Failure(
                "quote.bank",
                f"one {bank_name} bank",
                ", ".join(HASH_NAMES.get(s.hash_alg, hex(s.hash_alg)) for s in selected_banks)
                or "none",
            )
        )
    elif selected_banks[0].pcrs != supplied:
        failures.append(
            Failure(
                "quote.selection",
                ",".join(map(str, supplied)),
                ",".join(map(str, selected_banks[0].pcrs)),
                detail="quoted PCR selection differs from the PCR values supplied",
            )
        )
    else:
        size = HASH_SIZES.get(bank, 0)
        wrong = [i for i in supplied if len(pcrs[i]) != size]
        if wrong:
            failures.append(
                Failure("quote.pcr_values", f"{size}-byte values", f"other lengths at {wrong}")
            )
        else:
            computed = pcr_digest(pcrs, supplied, bank)
            if computed != attest.pcr_digest:
                failures.append(
                    Failure(
                        "quote.pcr_digest",
                        computed.hex(),
                        attest.pcr_digest.hex(),
                        detail="supplied PCR values are not the quoted ones",
                    )
                )
    return failures


def verify_quote(
    ak: TpmPublic,
    attest_bytes: bytes,
    signature_bytes: bytes,
    pcrs: Mapping[int, bytes],
    qualifying_data: bytes,
    *,
    bank: int = TPM_ALG_SHA256,
) -> Attest:
    """Verify a PCR quote and return the parsed ``TPMS_ATTEST``.

    Malformed structures raise ``MalformedEvidenceError`` before any check runs; otherwise
    every failed check of ``check_quote`` is raised together in one ``ValidationError``.
    """
    attest = parse_attest(attest_bytes)
    signature = parse_signature(signature_bytes)
    failures = check_quote(ak, attest, signature, pcrs, qualifying_data, bank=bank)
    if failures:
        raise ValidationError(failures, subject="TPM quote")
    return attest
