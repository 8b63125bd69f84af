"""Variant bindings of REPORT_DATA: Azure (against the real vector), AWS, GCP."""

from __future__ import annotations

import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from constellation.attestation import MalformedEvidenceError, snp
from constellation.attestation.snp.bindings import spki_der


@pytest.fixture(scope="module")
def azure(azure_dir):
    runtime = (azure_dir / "runtimedata.bin").read_bytes()
    report = snp.parse_report((azure_dir / "attestation.bin").read_bytes())
    return runtime, report


def test_azure_runtime_data_binding_on_the_real_vector(azure):
    runtime, report = azure
    hcl = snp.parse_hcl_runtime_data(runtime)
    assert hcl.ak_exponent == 65537
    assert hcl.ak_public_key.key_size == 2048
    assert snp.AzureRuntimeDataBinding(runtime, hcl.ak_public_key).check(report) == []


def test_azure_binding_in_a_verification(azure, azure_dir):
    runtime, _ = azure
    binding = snp.AzureRuntimeDataBinding(
        runtime, snp.parse_hcl_runtime_data(runtime).ak_public_key
    )
    from datetime import UTC, datetime

    snp.verify(
        (azure_dir / "attestation.bin").read_bytes(),
        (azure_dir / "vcek.cert").read_bytes(),
        (azure_dir / "certchain.pem").read_bytes(),
        at=datetime(2025, 1, 1, tzinfo=UTC),
        policy=snp.Policy(checks=(binding,)),
    )


def test_azure_other_ak_is_refused(azure):
    runtime, report = azure
    other = rsa.generate_private_key(65537, 2048).public_key()
    failures = snp.AzureRuntimeDataBinding(runtime, other).check(report)
    assert [f.check for f in failures] == ["snp.azure.ak"]


def test_azure_tampered_runtime_data_is_refused(azure):
    runtime, report = azure
    tampered = runtime.replace(b'"secure-boot":false', b'"secure-boot":true ')
    assert tampered != runtime
    key = snp.parse_hcl_runtime_data(runtime).ak_public_key
    failures = snp.AzureRuntimeDataBinding(tampered, key).check(report)
    assert [f.check for f in failures] == ["snp.azure.runtime_data"]


def test_azure_report_data_tail_must_be_zero(azure, milan):
    runtime, _ = azure
    data = hashlib.sha256(runtime).digest() + b"\x01" * 32
    report = snp.parse_report(milan.report(report_data=data))
    key = snp.parse_hcl_runtime_data(runtime).ak_public_key
    failures = snp.AzureRuntimeDataBinding(runtime, key).check(report)
    assert [f.check for f in failures] == ["snp.azure.report_data_tail"]


@pytest.mark.parametrize(
    "document",
    [
        b"not json",
        b"[]",
        b'{"keys": {}}',
        b'{"keys": []}',
        b'{"keys": [{"kid": "HCLAkPub", "kty": "EC"}]}',
        b'{"keys": [{"kid": "HCLAkPub", "kty": "RSA", "n": "!!", "e": "AQAB"}]}',
        b'{"keys": [{"kid": "HCLAkPub", "kty": "RSA", "n": 5, "e": "AQAB"}]}',
        b'{"keys": [{"kid": "HCLAkPub", "kty": "RSA", "n": "AQAB", "e": "AQAB"},'
        b' {"kid": "HCLAkPub", "kty": "RSA", "n": "AQAB", "e": "AQAB"}]}',
    ],
)
def test_malformed_runtime_data(document, milan):
    with pytest.raises(MalformedEvidenceError):
        snp.parse_hcl_runtime_data(document)
    report = snp.parse_report(
        milan.report(report_data=hashlib.sha256(document).digest() + bytes(32))
    )
    key = rsa.generate_private_key(65537, 2048).public_key()
    failures = snp.AzureRuntimeDataBinding(document, key).check(report)
    assert [f.check for f in failures] == ["snp.azure.ak"]


def test_azure_binding_reads_the_jwk_of_a_synthetic_document(milan):
    key = rsa.generate_private_key(65537, 2048).public_key()
    numbers = key.public_numbers()

    def b64(value: int) -> str:
        import base64

        raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    document = json.dumps(
        {
            "keys": [
                {"kid": "HCLEkPub", "kty": "RSA", "n": "AQAB", "e": "AQAB"},
                {"kid": "HCLAkPub", "kty": "RSA", "n": b64(numbers.n), "e": b64(numbers.e)},
            ]
        }
    ).encode()
    report = snp.parse_report(
        milan.report(report_data=hashlib.sha256(document).digest() + bytes(32))
    )
    assert snp.AzureRuntimeDataBinding(document, key).check(report) == []


def test_aws_binding(milan):
    ak = ec.generate_private_key(ec.SECP384R1()).public_key()
    binding = snp.AwsAkBinding.for_key(ak)
    assert binding.expected_report_data == hashlib.sha512(spki_der(ak)).digest()
    good = snp.parse_report(milan.report(report_data=binding.expected_report_data))
    assert binding.check(good) == []
    other = snp.AwsAkBinding.for_key(ec.generate_private_key(ec.SECP384R1()).public_key())
    assert [f.check for f in other.check(good)] == ["snp.aws.report_data"]
    truncated = snp.parse_report(
        milan.report(report_data=binding.expected_report_data[:32] + bytes(32))
    )
    assert [f.check for f in binding.check(truncated)] == ["snp.aws.report_data"]


def test_aws_binding_in_a_vlek_verification(milan):
    from datetime import UTC, datetime

    ak = ec.generate_private_key(ec.SECP256R1()).public_key()
    binding = snp.AwsAkBinding.for_key(ak)
    ev = milan.evidence("vlek", report_data=binding.expected_report_data)
    snp.verify(
        ev.report,
        ev.signer,
        ev.chain,
        roots=milan.roots(),
        at=datetime(2026, 1, 1, tzinfo=UTC),
        policy=snp.Policy(checks=(binding,)),
    )


def test_gcp_binding(milan):
    extra = hashlib.sha256(b"user data" + b"nonce").digest()
    binding = snp.GcpExtraDataBinding(extra)
    good = snp.parse_report(milan.report(report_data=extra + bytes(32)))
    assert binding.check(good) == []
    assert [f.check for f in snp.GcpExtraDataBinding(bytes(32)).check(good)] == [
        "snp.gcp.report_data"
    ]
    padded_wrong = snp.parse_report(milan.report(report_data=extra + b"\x01" + bytes(31)))
    assert [f.check for f in binding.check(padded_wrong)] == ["snp.gcp.report_data"]
    with pytest.raises(ValueError, match="32 bytes"):
        snp.GcpExtraDataBinding(extra + b"x")
