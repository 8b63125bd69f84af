"""SEV-SNP-rooted vTPM documents: the ``SnpVtpmValidator.verify`` path (AWS and Azure rules).

The AWS base is valid end to end: a software TPM's quote whose AK's SPKI hash is the
REPORT_DATA of a fake-AMD VLEK report, composed with ``compose_document``. The Azure base
carries the real Azure report, HCL runtime data and AMD chain (when the shared vectors exist)
with a software quote: it reaches every stage and is refused at the quote. The first input
byte's bit 7 picks the base; the rest is ``_shapes.FieldFuzzer``'s encoding. Validators are
built once with fixed clocks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime

from fuzzsupport import shared_vector

from constellation.attestation.boundedparse import loads_json
from constellation.attestation.eventlog import encode_header
from constellation.attestation.measurements import Measurements
from constellation.attestation.snp.bindings import spki_der
from constellation.attestation.snp.certs import Roots
from constellation.attestation.snpvtpm import (
    AWS_SEV_SNP,
    AZURE_SEV_SNP,
    SnpEvidence,
    SnpVtpmValidator,
    aws_validator,
    azure_validator,
    compose_document,
)
from constellation.attestation.testing.fakeamd import NOW, FakeAmd
from constellation.attestation.testing.softtpm import SoftwareTpmIssuer
from targets._shapes import FieldFuzzer

NONCE = bytes(range(32))
USER_DATA = b"fuzz"
AZURE_CLOCK = datetime(2025, 6, 1, tzinfo=UTC)
PCRS = {i: bytes(32) for i in range(24)}
FAKE = FakeAmd("Milan")


def _aws() -> tuple[FieldFuzzer, SnpVtpmValidator]:
    forger = SoftwareTpmIssuer(PCRS, encode_header(), variant=AWS_SEV_SNP)
    report_data = hashlib.sha512(spki_der(forger.key.public_key())).digest()
    evidence = FAKE.evidence("vlek", report_data=report_data)
    document = compose_document(
        forger.issue(USER_DATA, NONCE),
        SnpEvidence(evidence.report, evidence.signer, evidence.chain),
    )
    validator = aws_validator(Measurements(), roots=FAKE.roots(), clock=lambda: NOW)
    validator.verify(document, NONCE)  # the base must verify, or the target is moot
    return FieldFuzzer(loads_json(document)), validator


def _azure() -> tuple[FieldFuzzer, SnpVtpmValidator] | None:
    names = ("attestation.bin", "vcek.cert", "certchain.pem", "runtimedata.bin")
    report, vcek, chain, runtime = (shared_vector(f"azure-sev-snp/{n}") for n in names)
    if report is None or vcek is None or chain is None or runtime is None:
        return None
    forger = SoftwareTpmIssuer(PCRS, encode_header(), variant=AZURE_SEV_SNP, instance_info=runtime)
    document = compose_document(forger.issue(USER_DATA, NONCE), SnpEvidence(report, vcek, chain))
    validator = azure_validator(Measurements(), roots=Roots.amd(), clock=lambda: AZURE_CLOCK)
    return FieldFuzzer(loads_json(document)), validator


BASES = [_aws()]
if (_azure_base := _azure()) is not None:
    BASES.append(_azure_base)


def seeds() -> Iterator[bytes]:
    for index, (fields, _) in enumerate(BASES):
        for seed in fields.seeds():
            yield bytes([index << 7]) + seed


def target(data: bytes) -> None:
    if not data:
        return
    fields, validator = BASES[(data[0] >> 7) % len(BASES)]
    validator.verify(fields.build(data[1:]), NONCE)
