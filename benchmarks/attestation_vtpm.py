"""Throughput of vTPM attestation: pure validations per second and swtpm quotes per second.

Usage: ``uv run python benchmarks/attestation_vtpm.py [--seconds S]``

Validation runs in this process on one core (no I/O). Issuing talks to one real swtpm over
loopback; each quote includes creating and flushing the AK and reading PCRs 0..23.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import time

from constellation.attestation.measurements import Measurements
from constellation.attestation.swtpm import SwtpmManager
from constellation.attestation.vtpm import VtpmIssuer, VtpmValidator, firmware_measure


def rate(action, seconds: float) -> tuple[float, int]:
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        action()
        count += 1
    return count / (time.perf_counter() - start), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    with SwtpmManager() as manager:
        (tpm,) = manager.start(1)
        log = b""
        for pcr in (4, 9, 11):
            log = firmware_measure(tpm.tcti, log, pcr, hashlib.sha256(bytes([pcr])).digest())
        issuer = VtpmIssuer(tpm.tcti, event_log=log)
        nonce = os.urandom(32)
        user_data = hashlib.sha256(b"benchmark").digest()
        document = issuer.issue(user_data, nonce)
        pcrs = VtpmValidator(Measurements()).verify(document, nonce).pcrs
        expected = Measurements.from_dict({str(i): pcrs[i].hex() for i in (4, 9, 11, 15)})
        validator = VtpmValidator(expected, require_event_log=True)

        validations, n_validations = rate(lambda: validator.verify(document, nonce), args.seconds)
        quotes, n_quotes = rate(lambda: issuer.issue(user_data, os.urandom(32)), args.seconds)

    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, document {len(document)} B")
    print(f"validations/s (pure, 1 core): {validations:.0f} ({n_validations} in {args.seconds}s)")
    print(f"quotes/s (swtpm, AK create+quote+PCR read+flush): {quotes:.0f} ({n_quotes})")


if __name__ == "__main__":
    main()
