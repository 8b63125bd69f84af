"""SEV-SNP attestation report: the 1184-byte structure a guest's PSP signs."""

from __future__ import annotations

from collections.abc import Iterator

from fuzzsupport import shared_vector

from constellation.attestation.snp.report import (
    REPORT_SIZE,
    parse_report,
    report_bytes,
    signature_der,
)


def seeds() -> Iterator[bytes]:
    real = shared_vector("azure-sev-snp/attestation.bin")
    if real is not None:
        yield real
    yield bytes(REPORT_SIZE)


def target(data: bytes) -> None:
    report = parse_report(report_bytes(data))
    signature_der(report)
