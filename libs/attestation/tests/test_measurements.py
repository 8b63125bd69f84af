"""Measurements: strict parsing, comparison reporting every mismatch, signed published files."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from constellation.attestation.errors import AttestationError
from constellation.attestation.measurements import (
    ImageMeasurements,
    Measurement,
    Measurements,
    MeasurementsError,
    MeasurementsSignatureError,
    VariantMeasurements,
    pcr15_for_cluster_id,
    sign_measurements,
    verify_signed_measurements,
)

A = "aa" * 32
B = "bb" * 32


def test_json_and_yaml_round_trip() -> None:
    text = json.dumps(
        {"4": {"expected": A, "warnOnly": False}, "9": {"expected": B, "warnOnly": True}}
    )
    parsed = Measurements.from_json(text)
    assert parsed[4] == Measurement(bytes.fromhex(A), warn_only=False)
    assert parsed[9].warn_only
    assert json.loads(parsed.to_json()) == json.loads(text)
    assert Measurements.from_yaml(parsed.to_yaml()) == parsed
    assert Measurements.from_json(parsed.to_json()) == parsed


def test_short_form_is_enforced() -> None:
    assert Measurements.from_dict({"11": A})[11] == Measurement(bytes.fromhex(A))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"4": {"expected": "zz" * 32}}, "not hex"),
        ({"4": {"expected": "aa" * 31}}, "31 bytes"),
        ({"4": {"expected": "aa" * 33}}, "33 bytes"),
        ({"4": {"expected": A}, "9": {"expected": "bb" * 48}}, "mix value lengths"),
        ({"24": {"expected": A}}, "out of range"),
        ({"-1": {"expected": A}}, "not a PCR number"),
        ({"four": {"expected": A}}, "not a PCR number"),
        ({"4": {"warnOnly": False}}, "missing 'expected'"),
        ({"4": {"expected": A, "warnOnly": "no"}}, "'warnOnly' must be"),
        ({"4": {"expected": A, "extra": 1}}, "unknown fields"),
        ({"4": 7}, "must be an object"),
        ({"4": {"expected": 7}}, "hex string"),
        ([A], "must be an object mapping"),
    ],
)
def test_strict_parsing(data: object, message: str) -> None:
    with pytest.raises(MeasurementsError, match=message):
        Measurements.from_dict(data)


def test_garbage_json_and_yaml() -> None:
    with pytest.raises(MeasurementsError, match="not valid JSON"):
        Measurements.from_json("{")
    with pytest.raises(MeasurementsError, match="not valid YAML"):
        Measurements.from_yaml("a: [")
    with pytest.raises(MeasurementsError):
        Measurements.from_yaml("- 1")


def test_duplicate_index_in_yaml() -> None:
    with pytest.raises(MeasurementsError, match="appears twice"):
        Measurements.from_yaml(f'4: "{A}"\n"04": "{B}"\n')


def test_measurements_error_is_typed() -> None:
    assert issubclass(MeasurementsError, AttestationError)


def test_compare_reports_every_mismatch() -> None:
    expected = Measurements.from_dict(
        {
            "4": {"expected": A},
            "9": {"expected": A},
            "11": {"expected": A, "warnOnly": True},
            "12": {"expected": A},
        }
    )
    actual = {4: bytes.fromhex(A), 9: bytes.fromhex(B), 11: bytes.fromhex(B)}
    failures, warnings = expected.compare(actual)
    assert [(f.check, f.actual) for f in failures] == [("pcr[9]", B), ("pcr[12]", "missing")]
    assert all(f.enforced for f in failures)
    assert [(w.check, w.enforced) for w in warnings] == [("pcr[11]", False)]
    assert expected.compare({i: bytes.fromhex(A) for i in (4, 9, 11, 12)}) == ([], [])


def test_pcr15_value_and_copies() -> None:
    cluster_id = b"\x42" * 32
    expected = hashlib.sha256(bytes(32) + hashlib.sha256(cluster_id).digest()).digest()
    assert pcr15_for_cluster_id(cluster_id) == expected
    base = Measurements.from_dict({"4": A})
    zero = base.with_pcr15(None)
    marked = base.with_pcr15(cluster_id)
    assert zero[15].expected == bytes(32)
    assert marked[15].expected == expected
    assert 15 not in base
    assert marked[4] == base[4]


def _image() -> ImageMeasurements:
    return ImageMeasurements(
        version="v2.20.0",
        ref="-",
        stream="stable",
        entries=(
            VariantMeasurements("QEMU", "qemu-vtpm", Measurements.from_dict({"4": A, "9": B})),
            VariantMeasurements("Azure", "azure-sev-snp", Measurements.from_dict({"4": B})),
        ),
    )


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_signed_measurements_verify() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    data = _image().to_json()
    signature = sign_measurements(data, key)
    base64.b64decode(signature, validate=True)  # cosign blob format
    image = verify_signed_measurements(data, signature + b"\n", _pem(key))
    assert image == _image()
    assert image.for_variant("qemu-vtpm")[9].expected == bytes.fromhex(B)
    assert image.for_variant("azure-sev-snp", "Azure")[4].expected == bytes.fromhex(B)
    with pytest.raises(MeasurementsError, match="no measurements for variant"):
        image.for_variant("aws-sev-snp")


def test_signature_checks_reject() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    data = _image().to_json()
    signature = sign_measurements(data, key)
    with pytest.raises(MeasurementsSignatureError):
        verify_signed_measurements(data + b" ", signature, _pem(key))
    with pytest.raises(MeasurementsSignatureError):
        verify_signed_measurements(data, sign_measurements(data, other), _pem(key))
    with pytest.raises(MeasurementsSignatureError, match="not base64"):
        verify_signed_measurements(data, b"%%%", _pem(key))
    with pytest.raises(MeasurementsSignatureError):
        verify_signed_measurements(data, base64.b64encode(b"garbage"), _pem(key))
    with pytest.raises(MeasurementsError, match="not a PEM public key"):
        verify_signed_measurements(data, signature, b"garbage")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(MeasurementsError, match="P-256"):
        verify_signed_measurements(data, signature, _pem(rsa_key))
    with pytest.raises(MeasurementsError, match="P-256"):
        sign_measurements(data, ec.generate_private_key(ec.SECP384R1()))


def test_signed_garbage_is_rejected_after_the_signature() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    for data in (b"not json", b"[]", b'{"version": "v1", "ref": "-", "stream": "s", "list": []}'):
        with pytest.raises(MeasurementsError):
            verify_signed_measurements(data, sign_measurements(data, key), _pem(key))
    bad_entry = json.dumps(
        {
            "version": "v1",
            "ref": "-",
            "stream": "s",
            "list": [
                {"csp": "QEMU", "attestationVariant": "qemu-vtpm", "measurements": {"4": "zz"}}
            ],
        }
    ).encode()
    with pytest.raises(MeasurementsError, match=r"list\[0\]"):
        verify_signed_measurements(bad_entry, sign_measurements(bad_entry, key), _pem(key))
