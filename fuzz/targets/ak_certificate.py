"""AK certificates (``identity.verify_ak_certificate``) and platform root bundles.

Mode 0 verifies the rest as the DER AK certificate of a fixed AK against the test platform CA
at a fixed clock; mode 1 loads the rest as a PEM bundle of platform roots (configuration an
operator supplies).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from constellation.attestation.identity import Role
from constellation.attestation.identity.verify import load_platform_roots, verify_ak_certificate
from constellation.attestation.testing.platform import cached_platform_ca

CA = cached_platform_ca()
ROOTS = (CA.certificate,)
# Fixed for the whole run (the CA is made now, so "now" at import is inside its validity).
CLOCK = datetime.now(UTC)
AK_SPKI = (
    ec.derive_private_key(0xA1, ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
)
CERTIFICATE = CA.issue_ak_certificate(AK_SPKI, "worker-0", Role.WORKER)
_identity, _failures = verify_ak_certificate(
    CERTIFICATE, ak_spki_der=AK_SPKI, roots=ROOTS, at=CLOCK
)
if _identity is None or _failures:  # the seed must verify, or the target is moot
    raise RuntimeError(f"ak_certificate seed does not verify: {_failures}")


def seeds() -> Iterator[bytes]:
    yield b"\x00" + CERTIFICATE
    yield b"\x00" + CA.issue_ak_certificate(AK_SPKI, "control-plane-0", Role.CONTROL_PLANE)
    yield b"\x01" + CA.cert_pem


def target(data: bytes) -> None:
    if not data:
        return
    if data[0] % 2 == 0:
        verify_ak_certificate(data[1:], ak_spki_der=AK_SPKI, roots=ROOTS, at=CLOCK)
    else:
        load_platform_roots(data[1:])
