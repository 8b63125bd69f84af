"""Validations per second of a full ``azure-sev-snp`` document (SNP report + HCL runtime data +
swtpm quote), with the certificate chain memoized and, for comparison, without.

The document is built as in the tests: a real swtpm quotes with an RSA-2048 AK, a synthetic HCL
runtime data names that AK as ``HCLAkPub``, and the report is signed by the tests' fake AMD
hierarchy minted with RSA-4096 keys (the size of AMD's ARK/ASK), so chain checks cost what
real ones do. The swtpm is stopped by PID whatever happens.

    uv run python benchmarks/snpvtpm_validate.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from cryptography.hazmat.primitives.asymmetric import rsa

from constellation.attestation.evidence import Validator
from constellation.attestation.measurements import Measurements
from constellation.attestation.snp import Policy
from constellation.attestation.snpvtpm import AZURE_SEV_SNP, SnpEvidence, compose_document
from constellation.attestation.swtpm import start_swtpm
from constellation.attestation.testing.modules import load_module
from constellation.attestation.testing.platform import measure_boot
from constellation.attestation.tpm import parse_tpmt_public
from constellation.attestation.variants import get_variant
from constellation.attestation.vtpm import VtpmIssuer, open_tpm, read_pcrs

FAKEAMD = Path(__file__).resolve().parents[1] / "libs/attestation/tests/snp/fakeamd.py"
RSA_AK = "rsa2048:rsassa-sha256:null"


def load_fakeamd() -> ModuleType:
    return load_module("constellation_snp_tests_fakeamd", FAKEAMD)


def b64url(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def rate(work: Callable[[], object], seconds: float) -> float:
    """Operations per second over about ``seconds`` (at least 5 operations)."""
    count = 0
    start = time.perf_counter()
    while True:
        for _ in range(5):
            work()
        count += 5
        now = time.perf_counter()
        if now - start >= seconds:
            return count / (now - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    fakeamd = load_fakeamd()
    amd = fakeamd.FakeAmd("Milan", rsa_bits=4096)
    tpm = start_swtpm()
    try:
        ak = parse_tpmt_public(VtpmIssuer(tpm.tcti, ak_template=RSA_AK).ak_public()).public_key
        assert isinstance(ak, rsa.RSAPublicKey)
        numbers = ak.public_numbers()
        jwk = {"kid": "HCLAkPub", "kty": "RSA", "e": b64url(numbers.e), "n": b64url(numbers.n)}
        runtime = json.dumps({"keys": [jwk], "vm-configuration": {}}).encode()
        evidence = amd.evidence(report_data=hashlib.sha256(runtime).digest() + bytes(32))
        nonce = os.urandom(32)
        log = measure_boot(tpm.tcti)  # SNP validators require (and replay) the event log
        vtpm = VtpmIssuer(
            tpm.tcti,
            variant=AZURE_SEV_SNP,
            instance_info=runtime,
            ak_template=RSA_AK,
            event_log=log,
        ).issue(b"user data", nonce)
        with open_tpm(tpm.tcti) as esapi:
            pcrs = read_pcrs(esapi)[1]
    finally:
        tpm.stop()
    document = compose_document(vtpm, SnpEvidence(evidence.report, evidence.signer, evidence.chain))
    measurements = Measurements.from_dict({str(i): pcrs[i].hex() for i in (0, 4, 9, 11, 15)})
    variant = get_variant(AZURE_SEV_SNP)

    def build() -> Validator:
        return variant.validator(
            measurements, policy=Policy(), roots=amd.roots(), clock=lambda: fakeamd.NOW
        )

    cached = build()
    assert cached.validate(document, nonce) == b"user data"
    warm = rate(lambda: cached.validate(document, nonce), args.seconds)
    cold = rate(lambda: build().validate(document, nonce), args.seconds)
    print(f"document: {len(document)} bytes (report, VCEK, ASK+ARK RSA-4096, RSA-2048 AK quote)")
    print(f"validate, chain cached (one validator): {warm:8.1f} /s")
    print(f"validate, chain verified each time:     {cold:8.1f} /s")


if __name__ == "__main__":
    main()
