"""Expected measurements and the signed files they are published in.

``Measurements`` maps a PCR index to the value it must hold and whether a mismatch is enforced
or only warned about. The JSON/YAML form is ``{"4": {"expected": "<hex>", "warnOnly": false}}``.
Parsing is strict (DESIGN.md §4.3): an index outside 0..23, a value that is not hex, a value of
a length other than 32 (SHA-256 PCRs) or 48 bytes (SHA-384 registers), or a mix of lengths is
rejected with a ``MeasurementsError`` that says which entry is wrong.

An image publisher ships one JSON file per image version,
``{version, ref, stream, list: [{csp, attestationVariant, measurements}]}``, with a detached
ECDSA P-256/SHA-256 signature in cosign's blob format (base64 of the DER signature). The CLI
only merges measurements whose signature verifies against its configured public key.

Both forms are parsed with ``boundedparse`` (size, nesting and key bounds): a hostile file is a
``MeasurementsError``, never a ``RecursionError`` or ``TypeError``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from constellation.attestation.boundedparse import load_yaml, loads_json
from constellation.attestation.errors import AttestationError, Failure

PCR_COUNT = 24
#: Measurements files are a few KiB; anything beyond 1 MiB is refused unread.
MAX_MEASUREMENTS_SIZE = 1 << 20
ALLOWED_VALUE_LENGTHS = (32, 48)
PCR_NODE_LOCK = 15
SHA256_ZERO = bytes(32)


class MeasurementsError(AttestationError):
    """Measurements (or a published measurements file) are malformed."""


class MeasurementsSignatureError(MeasurementsError):
    """A published measurements file is not signed by the trusted key."""


@dataclass(frozen=True)
class Measurement:
    """The value one PCR must hold; a ``warn_only`` mismatch is reported but not enforced."""

    expected: bytes
    warn_only: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"expected": self.expected.hex(), "warnOnly": self.warn_only}


def pcr15_for_cluster_id(cluster_id: bytes) -> bytes:
    """PCR 15 after ``TPM2_PCR_Event(15, cluster_id)`` on a fresh SHA-256 bank.

    The TPM hashes the event data, then extends: ``SHA-256(0^32 || SHA-256(cluster_id))``.
    """
    return hashlib.sha256(SHA256_ZERO + hashlib.sha256(cluster_id).digest()).digest()


def _parse_index(key: object) -> int:
    text = str(key)
    if not text.isdigit() or not text.isascii():
        raise MeasurementsError(f"measurement index {key!r} is not a PCR number (0..23)")
    index = int(text)
    if not 0 <= index < PCR_COUNT:
        raise MeasurementsError(f"measurement index {index} is out of range (0..23)")
    return index


def _parse_value(index: int, value: object) -> bytes:
    if isinstance(value, bytes):
        raw = value
    elif isinstance(value, str):
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise MeasurementsError(
                f"measurement {index}: expected value is not hex: {value[:80]!r}"
            ) from None
    else:
        raise MeasurementsError(
            f"measurement {index}: expected value must be a hex string, got {type(value).__name__}"
        )
    if len(raw) not in ALLOWED_VALUE_LENGTHS:
        raise MeasurementsError(
            f"measurement {index}: expected value has {len(raw)} bytes, must be 32 or 48"
        )
    return raw


def _parse_entry(index: int, entry: object) -> Measurement:
    if isinstance(entry, str | bytes):
        # Short form: a bare value is an enforced measurement.
        return Measurement(_parse_value(index, entry))
    if not isinstance(entry, Mapping):
        raise MeasurementsError(
            f"measurement {index}: must be an object with 'expected' and 'warnOnly'"
        )
    unknown = set(entry) - {"expected", "warnOnly"}
    if unknown:
        raise MeasurementsError(f"measurement {index}: unknown fields {sorted(map(str, unknown))}")
    if "expected" not in entry:
        raise MeasurementsError(f"measurement {index}: missing 'expected'")
    warn_only = entry.get("warnOnly", False)
    if not isinstance(warn_only, bool):
        raise MeasurementsError(f"measurement {index}: 'warnOnly' must be true or false")
    return Measurement(_parse_value(index, entry["expected"]), warn_only)


class Measurements(Mapping[int, Measurement]):
    """An immutable map PCR index -> ``Measurement``, validated on construction."""

    __slots__ = ("_entries",)

    def __init__(self, entries: Mapping[int, Measurement] | None = None) -> None:
        checked: dict[int, Measurement] = {}
        for index, measurement in sorted((entries or {}).items()):
            if not isinstance(index, int) or not 0 <= index < PCR_COUNT:
                raise MeasurementsError(f"measurement index {index!r} is out of range (0..23)")
            _parse_value(index, measurement.expected)
            checked[index] = measurement
        lengths = {len(m.expected) for m in checked.values()}
        if len(lengths) > 1:
            detail = ", ".join(f"{i}: {len(m.expected)}" for i, m in checked.items())
            raise MeasurementsError(f"measurements mix value lengths ({detail}); use one bank")
        self._entries = checked

    # Mapping protocol
    def __getitem__(self, index: int) -> Measurement:
        return self._entries[index]

    def __iter__(self) -> Iterator[int]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Measurements):
            return self._entries == other._entries
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self._entries.items()))

    def __repr__(self) -> str:
        return f"Measurements({self.to_dict()!r})"

    # Construction and serialization
    @classmethod
    def from_dict(cls, data: object) -> Measurements:
        if not isinstance(data, Mapping):
            raise MeasurementsError("measurements must be an object mapping PCR index to value")
        entries: dict[int, Measurement] = {}
        for key, entry in data.items():
            index = _parse_index(key)
            if index in entries:
                raise MeasurementsError(f"measurement index {index} appears twice")
            entries[index] = _parse_entry(index, entry)
        return cls(entries)

    @classmethod
    def from_json(cls, text: str | bytes) -> Measurements:
        data = loads_json(
            text, max_size=MAX_MEASUREMENTS_SIZE, error=MeasurementsError, what="measurements"
        )
        return cls.from_dict(data)

    @classmethod
    def from_yaml(cls, text: str | bytes) -> Measurements:
        data = load_yaml(
            text, max_size=MAX_MEASUREMENTS_SIZE, error=MeasurementsError, what="measurements"
        )
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {str(index): m.to_dict() for index, m in self._entries.items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # Derived copies
    def with_pcr(self, index: int, expected: bytes, *, warn_only: bool = False) -> Measurements:
        """A copy in which ``index`` expects ``expected``."""
        entries = dict(self._entries)
        entries[index] = Measurement(expected, warn_only)
        return Measurements(entries)

    def with_pcr15(self, cluster_id: bytes | None) -> Measurements:
        """A copy whose PCR 15 is enforced as zero (``None``) or as marked by ``cluster_id``.

        ``join-config`` wants zero (the node has not been initialized); ``verify`` wants the
        cluster-specific value.
        """
        value = SHA256_ZERO if cluster_id is None else pcr15_for_cluster_id(cluster_id)
        return self.with_pcr(PCR_NODE_LOCK, value)

    # Comparison
    def compare(self, actual_pcrs: Mapping[int, bytes]) -> tuple[list[Failure], list[Failure]]:
        """Compare quoted PCR values to the expectation; return ``(failures, warnings)``.

        Every mismatch is reported, each under the check name ``pcr[N]``; an enforced one is a
        failure, a warn-only one a warning.
        """
        failures: list[Failure] = []
        warnings: list[Failure] = []
        for index, measurement in self._entries.items():
            actual = actual_pcrs.get(index)
            if actual == measurement.expected:
                continue
            finding = Failure(
                check=f"pcr[{index}]",
                expected=measurement.expected.hex(),
                actual="missing" if actual is None else actual.hex(),
                enforced=not measurement.warn_only,
            )
            (warnings if measurement.warn_only else failures).append(finding)
        return failures, warnings


@dataclass(frozen=True)
class VariantMeasurements:
    """The measurements of one image on one CSP for one attestation variant."""

    csp: str
    attestation_variant: str
    measurements: Measurements


@dataclass(frozen=True)
class ImageMeasurements:
    """A published measurements file of one image version."""

    version: str
    ref: str
    stream: str
    entries: tuple[VariantMeasurements, ...]

    def for_variant(self, attestation_variant: str, csp: str | None = None) -> Measurements:
        """The measurements for ``attestation_variant`` (and ``csp`` when given)."""
        for entry in self.entries:
            if entry.attestation_variant == attestation_variant and csp in (None, entry.csp):
                return entry.measurements
        raise MeasurementsError(
            f"image {self.version} publishes no measurements for variant "
            f"{attestation_variant!r}" + (f" on {csp!r}" if csp else "")
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "ref": self.ref,
            "stream": self.stream,
            "list": [
                {
                    "csp": e.csp,
                    "attestationVariant": e.attestation_variant,
                    "measurements": e.measurements.to_dict(),
                }
                for e in self.entries
            ],
        }

    def to_json(self) -> bytes:
        """The canonical bytes a publisher signs."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> ImageMeasurements:
        doc = loads_json(
            data, max_size=MAX_MEASUREMENTS_SIZE, error=MeasurementsError, what="measurements file"
        )
        if not isinstance(doc, dict):
            raise MeasurementsError("measurements file must be a JSON object")
        fields: dict[str, str] = {}
        for name in ("version", "ref", "stream"):
            value = doc.get(name)
            if not isinstance(value, str) or not value:
                raise MeasurementsError(f"measurements file: '{name}' must be a non-empty string")
            fields[name] = value
        items = doc.get("list")
        if not isinstance(items, list) or not items:
            raise MeasurementsError("measurements file: 'list' must be a non-empty array")
        entries: list[VariantMeasurements] = []
        for position, item in enumerate(items):
            if not isinstance(item, dict):
                raise MeasurementsError(f"measurements file: list[{position}] is not an object")
            csp = item.get("csp")
            variant = item.get("attestationVariant")
            if not isinstance(csp, str) or not isinstance(variant, str):
                raise MeasurementsError(
                    f"measurements file: list[{position}] needs string 'csp' and "
                    "'attestationVariant'"
                )
            try:
                measurements = Measurements.from_dict(item.get("measurements"))
            except MeasurementsError as exc:
                raise MeasurementsError(f"measurements file: list[{position}]: {exc}") from None
            entries.append(VariantMeasurements(csp, variant, measurements))
        return cls(fields["version"], fields["ref"], fields["stream"], tuple(entries))


def sign_measurements(data: bytes, private_key: ec.EllipticCurvePrivateKey) -> bytes:
    """Sign a measurements file the way cosign signs a blob: base64 of the DER ECDSA signature."""
    if not isinstance(private_key.curve, ec.SECP256R1):
        raise MeasurementsError("measurements are signed with ECDSA P-256 only")
    return base64.b64encode(private_key.sign(data, ec.ECDSA(hashes.SHA256())))


def verify_signed_measurements(
    data: bytes, signature: bytes, public_key_pem: bytes
) -> ImageMeasurements:
    """Verify the detached signature of a measurements file, then parse it.

    Nothing from ``data`` is interpreted before the signature has verified.
    """
    try:
        public_key = serialization.load_pem_public_key(public_key_pem)
    except (ValueError, TypeError) as exc:
        raise MeasurementsError(f"measurements public key is not a PEM public key: {exc}") from None
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise MeasurementsError("measurements public key must be an ECDSA P-256 key")
    try:
        der = base64.b64decode(b"".join(signature.split()), validate=True)
    except (binascii.Error, ValueError):
        raise MeasurementsSignatureError(
            "measurements signature is not base64 (expected cosign blob format)"
        ) from None
    try:
        public_key.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise MeasurementsSignatureError(
            "measurements signature does not verify with the configured public key; "
            "refusing to use these measurements"
        ) from None
    return ImageMeasurements.from_json(data)
