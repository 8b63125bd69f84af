"""Pure TPM structure parsing and quote verification with software-signed structures.

A software key stands in for a TPM's AK here: the structures are built byte for byte as a TPM
lays them out and really signed, so every check can be exercised positively and negatively.
"""

from __future__ import annotations

import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from constellation.attestation.errors import MalformedEvidenceError, ValidationError
from constellation.attestation.testing import softtpm
from constellation.attestation.testing.softtpm import (
    ecc_public,
    ecdsa_signature,
    rsa_public,
    rsassa_signature,
    selection,
    tpm2b,
)
from constellation.attestation.tpm import (
    AK_REQUIRED_ATTRIBUTES,
    TPM_ALG_SHA1,
    TPM_ALG_SHA256,
    TPMA_OBJECT_DECRYPT,
    parse_attest,
    parse_pcr_selection,
    parse_signature,
    parse_tpmt_public,
    verify_quote,
)

PCRS = {i: hashlib.sha256(bytes([i])).digest() for i in range(24)}
QUALIFYING = hashlib.sha256(b"qualifying").digest()


def attest(
    extra: bytes = QUALIFYING,
    bank: int = TPM_ALG_SHA256,
    pcrs: list[int] | None = None,
    digest: bytes | None = None,
) -> bytes:
    return softtpm.attest(extra, PCRS, bank=bank, selected=pcrs, digest=digest)


@pytest.fixture(scope="module")
def ecc_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def failed_checks(excinfo: pytest.ExceptionInfo[ValidationError]) -> set[str]:
    return {f.check for f in excinfo.value.failures}


def test_ecc_quote_verifies(ecc_key: ec.EllipticCurvePrivateKey) -> None:
    ak = parse_tpmt_public(ecc_public(ecc_key))
    assert ak.is_restricted_signing_key()
    assert ak.name[:2] == b"\x00\x0b"
    data = attest()
    parsed = verify_quote(ak, data, ecdsa_signature(ecc_key, data), PCRS, QUALIFYING)
    assert parsed.clock == 1234
    assert parsed.pcr_selection[0].pcrs == tuple(range(24))


def test_rsa_quote_verifies(rsa_key: rsa.RSAPrivateKey) -> None:
    ak = parse_tpmt_public(rsa_public(rsa_key))
    assert isinstance(ak.public_key, rsa.RSAPublicKey)
    assert ak.public_key.public_numbers().e == 65537
    data = attest()
    verify_quote(ak, data, rsassa_signature(rsa_key, data), PCRS, QUALIFYING)
    with pytest.raises(ValidationError) as rejected:
        verify_quote(ak, data, rsassa_signature(rsa_key, data + b"x"), PCRS, QUALIFYING)
    assert failed_checks(rejected) == {"quote.signature"}


def test_every_failed_check_is_reported(ecc_key: ec.EllipticCurvePrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    ak = parse_tpmt_public(ecc_public(ecc_key, AK_REQUIRED_ATTRIBUTES | TPMA_OBJECT_DECRYPT))
    data = attest(extra=b"\x01" * 32, digest=b"\x02" * 32)
    with pytest.raises(ValidationError) as rejected:
        verify_quote(ak, data, ecdsa_signature(other, data), PCRS, QUALIFYING)
    assert failed_checks(rejected) == {
        "ak.attributes",
        "quote.signature",
        "quote.qualifying_data",
        "quote.pcr_digest",
    }


def test_wrong_bank_and_selection(ecc_key: ec.EllipticCurvePrivateKey) -> None:
    ak = parse_tpmt_public(ecc_public(ecc_key))
    sha1 = attest(bank=TPM_ALG_SHA1)
    with pytest.raises(ValidationError) as rejected:
        verify_quote(ak, sha1, ecdsa_signature(ecc_key, sha1), PCRS, QUALIFYING)
    assert failed_checks(rejected) == {"quote.bank"}
    partial = attest(pcrs=[0, 1, 2])
    with pytest.raises(ValidationError) as rejected:
        verify_quote(ak, partial, ecdsa_signature(ecc_key, partial), PCRS, QUALIFYING)
    assert failed_checks(rejected) == {"quote.selection"}
    data = attest()
    short_values = {**PCRS, 3: b"\x00" * 20}
    with pytest.raises(ValidationError) as rejected:
        verify_quote(ak, data, ecdsa_signature(ecc_key, data), short_values, QUALIFYING)
    assert failed_checks(rejected) == {"quote.pcr_values"}


def test_sha1_signature_and_mismatched_scheme(
    ecc_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    ak = parse_tpmt_public(ecc_public(ecc_key))
    data = attest()
    with pytest.raises(ValidationError) as rejected:
        verify_quote(ak, data, ecdsa_signature(ecc_key, data, TPM_ALG_SHA1), PCRS, QUALIFYING)
    assert failed_checks(rejected) == {"quote.signature"}
    with pytest.raises(ValidationError) as rejected:
        verify_quote(ak, data, rsassa_signature(rsa_key, data), PCRS, QUALIFYING)
    assert failed_checks(rejected) == {"quote.signature"}


def test_pcr_selection_parser() -> None:
    (bank,) = parse_pcr_selection(selection(TPM_ALG_SHA256, [0, 7, 15, 23]))
    assert bank.hash_alg == TPM_ALG_SHA256
    assert bank.pcrs == (0, 7, 15, 23)
    with pytest.raises(MalformedEvidenceError):
        parse_pcr_selection(struct.pack(">I", 100))
    with pytest.raises(MalformedEvidenceError):
        parse_pcr_selection(struct.pack(">IHB", 1, TPM_ALG_SHA256, 200))


def _all_truncations(data: bytes) -> list[bytes]:
    return [data[:n] for n in range(len(data))]


def test_truncated_and_padded_structures(
    ecc_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    data = attest()
    cases = [
        (parse_tpmt_public, ecc_public(ecc_key)),
        (parse_tpmt_public, rsa_public(rsa_key)),
        (parse_attest, data),
        (parse_signature, ecdsa_signature(ecc_key, data)),
        (parse_signature, rsassa_signature(rsa_key, data)),
        (parse_pcr_selection, selection(TPM_ALG_SHA256, [1])),
    ]
    for parser, good in cases:
        parser(good)
        for truncated in _all_truncations(good):
            with pytest.raises(MalformedEvidenceError):
                parser(truncated)
        with pytest.raises(MalformedEvidenceError, match="trailing"):
            parser(good + b"\x00")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: b"\x00\x00\x00\x00" + d[4:],  # magic
        lambda d: d[:4] + b"\x80\x14" + d[6:],  # type: certify, not quote
        lambda d: d[:6] + b"\xff\xff" + d[8:],  # qualifiedSigner length beyond the data
    ],
)
def test_garbage_attest(mutate: object) -> None:
    assert callable(mutate)
    with pytest.raises(MalformedEvidenceError):
        parse_attest(mutate(attest()))


def test_garbage_public_areas(ecc_key: ec.EllipticCurvePrivateKey) -> None:
    good = ecc_public(ecc_key)
    off_curve = good[:-32] + bytes(31) + b"\x01"
    with pytest.raises(MalformedEvidenceError, match="not on P-256"):
        parse_tpmt_public(off_curve)
    with pytest.raises(MalformedEvidenceError, match="key type"):
        parse_tpmt_public(b"\x00\x08" + good[2:])
    with pytest.raises(MalformedEvidenceError, match="nameAlg"):
        parse_tpmt_public(good[:2] + b"\x00\x99" + good[4:])
    p384 = good[:16] + b"\x00\x04" + good[18:]  # curveID follows type..scheme
    with pytest.raises(MalformedEvidenceError, match="curve"):
        parse_tpmt_public(p384)


def test_garbage_signatures() -> None:
    with pytest.raises(MalformedEvidenceError, match="scheme"):
        parse_signature(struct.pack(">HH", 0x0016, TPM_ALG_SHA256) + tpm2b(b"x"))
    with pytest.raises(MalformedEvidenceError):
        parse_signature(b"\xff")
