"""The cosign blob signature path of a published measurements file.

``verify_signed_measurements(data, signature, public_key_pem)``: the first input byte picks
which of the three the rest replaces (the others stay valid); mode 3 signs the rest with the
trusted key first, so the parser behind the signature check is reached with fuzzed files.
"""

from __future__ import annotations

from collections.abc import Iterator

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from constellation.attestation.measurements import sign_measurements, verify_signed_measurements
from targets.measurements import IMAGE

_KEY = ec.derive_private_key(0xC05167, ec.SECP256R1())
PUBLIC_PEM = _KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
DATA = IMAGE.to_json()
SIGNATURE = sign_measurements(DATA, _KEY)


def seeds() -> Iterator[bytes]:
    yield b"\x00" + DATA
    yield b"\x01" + SIGNATURE
    yield b"\x02" + PUBLIC_PEM
    yield b"\x03" + DATA


def target(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 4, data[1:]
    if mode == 0:
        verify_signed_measurements(rest, SIGNATURE, PUBLIC_PEM)
    elif mode == 1:
        verify_signed_measurements(DATA, rest, PUBLIC_PEM)
    elif mode == 2:
        verify_signed_measurements(DATA, SIGNATURE, rest)
    else:
        verify_signed_measurements(rest, sign_measurements(rest, _KEY), PUBLIC_PEM)
