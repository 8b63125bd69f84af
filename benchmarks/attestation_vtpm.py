"""Throughput of vTPM attestation: pure validations per second and swtpm quotes per second.

Usage: ``uv run python benchmarks/attestation_vtpm.py [--seconds S]``

Validation runs in this process on one core (no I/O): the AK certificate's chain to the test
platform CA, the quote, the event log replay and the measurements. Issuing talks to one real
swtpm over its Unix socket; each quote includes loading the AK and reading PCRs 0..23.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import time

from constellation.attestation.identity import Role
from constellation.attestation.measurements import Measurements
from constellation.attestation.swtpm import SwtpmManager
from constellation.attestation.testing.platform import node_issuer, node_validator
from constellation.attestation.vtpm import firmware_measure, open_tpm, read_pcrs


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
        issuer = node_issuer(tpm.tcti, "bench-node", Role.WORKER, event_log=log)
        nonce = os.urandom(32)
        user_data = hashlib.sha256(b"benchmark").digest()
        document = issuer.issue(user_data, nonce)
        with open_tpm(tpm.tcti) as esapi:
            _, pcrs = read_pcrs(esapi)
        expected = Measurements.from_dict({str(i): pcrs[i].hex() for i in (4, 9, 11, 15)})
        validator = node_validator(expected)  # rooted AK, event log required

        validations, n_validations = rate(lambda: validator.verify(document, nonce), args.seconds)
        quotes, n_quotes = rate(lambda: issuer.issue(user_data, os.urandom(32)), args.seconds)

    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, document {len(document)} B")
    print(f"validations/s (pure, 1 core): {validations:.0f} ({n_validations} in {args.seconds}s)")
    print(f"quotes/s (swtpm, persistent AK: quote+PCR read): {quotes:.0f} ({n_quotes})")


if __name__ == "__main__":
    main()
