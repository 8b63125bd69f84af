"""A full SEV-SNP verify: report + V[CL]EK + chain against pinned roots at a fixed clock.

Two bases, a fake-AMD VCEK report (valid end to end) and, where the shared vectors exist, the
real Azure report with its real AMD chain. The first input byte picks the base (bit 7) and what
to fuzz (low bits): 0 the report, 1 the signer certificate, 2 the chain, 3 a splice into the
report (offset + bytes), 4 a splice into the signer DER, 5 all three (u16-length-split).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from fuzzsupport import shared_vector

from constellation.attestation.snp.certs import Roots
from constellation.attestation.snp.verify import Verifier
from constellation.attestation.testing.fakeamd import NOW, FakeAmd
from targets._shapes import join, splice, split

FAKE = FakeAmd("Milan")
_EVIDENCE = FAKE.evidence()
AZURE_CLOCK = datetime(2025, 6, 1, tzinfo=UTC)
MODES = 6


class Base:
    def __init__(
        self, report: bytes, signer: bytes, chain: bytes, roots: Roots, at: datetime
    ) -> None:
        self.report, self.signer, self.chain, self.roots, self.at = report, signer, chain, roots, at
        # Built once: a verifier memoizes chain verdicts, as a long-running service's does.
        self.verifier = Verifier(roots)


BASES = [Base(_EVIDENCE.report, _EVIDENCE.signer, _EVIDENCE.chain, FAKE.roots(), NOW)]
_azure = [shared_vector(f"azure-sev-snp/{n}") for n in ("attestation.bin", "vcek.cert")]
_azure_chain = shared_vector("azure-sev-snp/certchain.pem")
if _azure[0] is not None and _azure[1] is not None and _azure_chain is not None:
    BASES.append(Base(_azure[0], _azure[1], _azure_chain, Roots.amd(), AZURE_CLOCK))


def seeds() -> Iterator[bytes]:
    for index, base in enumerate(BASES):
        flag = index << 7
        yield bytes([flag | 0]) + base.report
        yield bytes([flag | 1]) + base.signer
        yield bytes([flag | 2]) + base.chain
        yield bytes([flag | 3]) + b"\x00\x00"
        yield bytes([flag | 4]) + b"\x00\x00"
        yield bytes([flag | 5]) + join(base.report, base.signer, base.chain)


def target(data: bytes) -> None:
    if not data:
        return
    base = BASES[(data[0] >> 7) % len(BASES)]
    mode = (data[0] & 0x7F) % MODES
    rest = data[1:]
    report, signer, chain = base.report, base.signer, base.chain
    if mode == 0:
        report = rest
    elif mode == 1:
        signer = rest
    elif mode == 2:
        chain = rest
    elif mode == 3:
        report = splice(report, rest)
    elif mode == 4:
        signer = splice(signer, rest)
    else:
        report, signer, chain = split(rest, 3)
    base.verifier.verify_report(report, signer, chain or None, at=base.at, roots=base.roots)
