"""TPM 2.0 structures from a quote: TPMS_ATTEST, TPMT_PUBLIC, TPMT_SIGNATURE, TPML_PCR_SELECTION.

The first input byte picks the structure; the rest is parsed, and a parsed one is put into a
quote check beside valid other parts (a software AK's genuine quote), so the checks run on
fuzzed values too: a fuzzed AK against a good quote, a fuzzed quote against the good AK, ...
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from constellation.attestation.testing.softtpm import (
    attest,
    ecc_public,
    ecdsa_signature,
    rsa_public,
    rsassa_signature,
    selection,
)
from constellation.attestation.tpm import (
    TPM_ALG_SHA1,
    TPM_ALG_SHA256,
    check_quote,
    parse_attest,
    parse_pcr_selection,
    parse_signature,
    parse_tpmt_public,
)

PCRS = {i: hashlib.sha256(bytes([i])).digest() for i in range(24)}
QUALIFYING = hashlib.sha256(b"fuzz").digest()
_KEY = ec.derive_private_key(0x1234567890ABCDEF, ec.SECP256R1())
_RSA_KEY = rsa.generate_private_key(65537, 2048)
AK = ecc_public(_KEY)
ATTEST = attest(QUALIFYING, PCRS)
SIGNATURE = ecdsa_signature(_KEY, ATTEST)
PARSED_AK = parse_tpmt_public(AK)
PARSED_ATTEST = parse_attest(ATTEST)
PARSED_SIGNATURE = parse_signature(SIGNATURE)


def seeds() -> Iterator[bytes]:
    yield b"\x00" + ATTEST
    yield b"\x00" + attest(QUALIFYING, PCRS, selected=[0, 1, 2])
    yield b"\x01" + AK
    yield b"\x01" + rsa_public(_RSA_KEY)
    yield b"\x02" + SIGNATURE
    yield b"\x02" + ecdsa_signature(_KEY, ATTEST, TPM_ALG_SHA1)
    yield b"\x02" + rsassa_signature(_RSA_KEY, ATTEST)
    yield b"\x03" + selection(TPM_ALG_SHA256, range(24))


def target(data: bytes) -> None:
    if not data:
        return
    kind, rest = data[0] % 4, data[1:]
    if kind == 0:
        check_quote(PARSED_AK, parse_attest(rest), PARSED_SIGNATURE, PCRS, QUALIFYING)
    elif kind == 1:
        ak = parse_tpmt_public(rest)
        _ = ak.name, ak.spki_der(), ak.is_restricted_signing_key()
        check_quote(ak, PARSED_ATTEST, PARSED_SIGNATURE, PCRS, QUALIFYING)
    elif kind == 2:
        check_quote(PARSED_AK, PARSED_ATTEST, parse_signature(rest), PCRS, QUALIFYING)
    else:
        parse_pcr_selection(rest)
