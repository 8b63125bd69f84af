"""SEV-SNP verification throughput next to its floor, one ECDSA P-384 verification.

Uses the real Azure evidence from ``../shared/vectors/azure-sev-snp`` (relative to the repo).
A warm verification (chain memoized by certificate hashes) should cost at most 1.5x the floor:
everything besides the report signature is parsing and comparisons.

    uv run python benchmarks/snp_verify.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from constellation.attestation import snp
from constellation.attestation.snp.report import signature_der

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "vectors" / "azure-sev-snp"
AT = datetime(2025, 6, 1, tzinfo=UTC)


def rate(work: Callable[[], object], seconds: float) -> float:
    """Operations per second over about ``seconds``."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(20):
            work()
        count += 20
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def paired(
    floor: Callable[[], object], work: Callable[[], object], seconds: float
) -> tuple[float, float, float]:
    """Best rates of ``floor`` and ``work`` measured back to back in seven rounds, and the
    median per-round cost ratio (robust against load from other processes on the machine)."""
    floors, works, ratios = [], [], []
    for _ in range(7):
        f = rate(floor, seconds / 14)
        w = rate(work, seconds / 14)
        floors.append(f)
        works.append(w)
        ratios.append(f / w)
    return max(floors), max(works), sorted(ratios)[len(ratios) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    if not (VECTORS / "attestation.bin").is_file():
        print(f"vectors not found at {VECTORS}; nothing to measure", file=sys.stderr)
        return 2
    report = (VECTORS / "attestation.bin").read_bytes()
    vcek = (VECTORS / "vcek.cert").read_bytes()
    chain = (VECTORS / "certchain.pem").read_bytes()

    parsed = snp.parse_report(report)
    key = snp.load_certificate(vcek).cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    der = signature_der(parsed)
    assert der is not None
    signed = parsed.signed_bytes
    algorithm = ec.ECDSA(hashes.SHA384())

    def floor() -> None:
        key.verify(der, signed, algorithm)

    def warm() -> None:
        snp.verify(report, vcek, chain, at=AT)

    def cold() -> None:
        snp.Verifier().verify_report(report, vcek, chain, at=AT)

    warm()  # fill the memo
    floor_rate, warm_rate, ratio = paired(floor, warm, args.seconds * 2)
    cold_rate = rate(cold, args.seconds / 2)
    print(f"ECDSA P-384 verify (floor):       {floor_rate:10.0f} /s  {1e6 / floor_rate:8.1f} us")
    print(f"snp.verify, chain memoized:       {warm_rate:10.0f} /s  {1e6 / warm_rate:8.1f} us")
    print(f"snp.verify, cold (chain checked): {cold_rate:10.0f} /s  {1e6 / cold_rate:8.1f} us")
    print(f"warm / floor cost (median round): {ratio:10.2f}x  (goal <= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
