"""SEV-SNP-backed vTPM validation: a real swtpm quote plus a report from the fake AMD signer.

Each variant's document is built the way its hardware would: the vTPM quote comes from a real
swtpm (an RSA-2048 AK for Azure, whose runtime data names it as ``HCLAkPub``), the report is
signed by ``fakeamd.FakeAmd`` (a hierarchy that really signs) with the variant's REPORT_DATA.
Every check has a test in which it must reject, and rejections list every stage's failures.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from constellation.attestation.errors import MalformedEvidenceError, ValidationError
from constellation.attestation.eventlog import encode_header
from constellation.attestation.evidence import Validator, extra_data
from constellation.attestation.measurements import Measurements
from constellation.attestation.snp import KdsClient, Policy, Roots
from constellation.attestation.snp.bindings import spki_der
from constellation.attestation.snpvtpm import (
    AWS_SEV_SNP,
    AZURE_SEV_SNP,
    GCP_SEV_SNP,
    SnpEvidence,
    SnpVtpmValidator,
    compose_document,
)
from constellation.attestation.swtpm import Swtpm
from constellation.attestation.testing import fakeamd
from constellation.attestation.tpm import TPM_ALG_RSA, parse_tpmt_public
from constellation.attestation.variants import VariantUnavailableError, get_variant
from constellation.attestation.vtpm import VtpmIssuer, open_tpm, read_pcrs

pytestmark = pytest.mark.swtpm

_HERE = Path(__file__).resolve().parent
VECTORS = _HERE.parents[2].parent / "shared" / "vectors" / "azure-sev-snp"
RSA_AK = "rsa2048:rsassa-sha256:null"
ECC_AK = "ecc256:ecdsa-sha256:null"
USER_DATA = hashlib.sha256(b"tls key spki").digest()
AZURE_VECTOR_CLOCK = datetime(2025, 6, 1, tzinfo=UTC)
DEBUG_BIT = 1 << 19
# TPMT_PUBLIC ends with the key: RSA ``TPM2B(n)``; ECC ``TPM2B(x) || TPM2B(y)``.
RSA_2048_MODULUS_SIZE = 256
P256_COORDINATE_SIZE = 32


@pytest.fixture(scope="module")
def amd() -> Any:
    return fakeamd.FakeAmd("Milan")


def checks(exc: ValidationError) -> set[str]:
    return {f.check for f in exc.failures}


def b64url(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def runtime_data(public_key: rsa.RSAPublicKey) -> bytes:
    """Synthetic HCL runtime data naming ``public_key`` as ``HCLAkPub`` (Azure's shape)."""
    numbers = public_key.public_numbers()
    jwk = {
        "kid": "HCLAkPub",
        "key_ops": ["sign"],
        "kty": "RSA",
        "e": b64url(numbers.e),
        "n": b64url(numbers.n),
    }
    document = {"keys": [jwk], "vm-configuration": {"secure-boot": True, "tpm-enabled": True}}
    return json.dumps(document).encode()


def substitute_key(
    tpmt_public: bytes, public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
) -> bytes:
    """``tpmt_public`` with its key replaced: the TPMT_PUBLIC of an AK this TPM does not hold."""
    if isinstance(public_key, rsa.RSAPublicKey):
        n = public_key.public_numbers().n.to_bytes(RSA_2048_MODULUS_SIZE, "big")
        result = tpmt_public[:-RSA_2048_MODULUS_SIZE] + n
    else:
        numbers = public_key.public_numbers()
        point = b"".join(
            len_prefix + value.to_bytes(P256_COORDINATE_SIZE, "big")
            for len_prefix, value in ((b"\x00\x20", numbers.x), (b"\x00\x20", numbers.y))
        )
        result = tpmt_public[: -len(point)] + point
    assert parse_tpmt_public(result).spki_der() == spki_der(public_key)
    return result


def set_ak(document: bytes, tpmt_public: bytes) -> bytes:
    doc = json.loads(document)
    doc["ak_public"] = base64.b64encode(tpmt_public).decode()
    return json.dumps(doc).encode()


def current_pcrs(tpm: Swtpm) -> dict[int, bytes]:
    with open_tpm(tpm.tcti) as esapi:
        return read_pcrs(esapi)[1]


@dataclass
class Case:
    """One issued document and what validating it needs."""

    document: bytes
    nonce: bytes
    pcrs: dict[int, bytes]
    ak_public: bytes

    def measurements(self, *indices: int) -> Measurements:
        return Measurements.from_dict({str(i): self.pcrs[i].hex() for i in indices})


def issue(
    amd: Any,
    tpm: Swtpm,
    variant: str,
    *,
    template: str | None = None,
    bound_key: Any = None,
    report_nonce: bytes | None = None,
    runtime: bytes | None = None,
    report_data: bytes | None = None,
    **report_fields: Any,
) -> Case:
    """Issue ``variant`` evidence the way its hardware would, from swtpm and the fake AMD.

    ``bound_key`` is the AK the report binds (default: the swtpm AK); ``report_nonce`` the
    nonce a GCP report binds (default: the quote's); ``report_data`` overrides REPORT_DATA.
    """
    template = template or (RSA_AK if variant == AZURE_SEV_SNP else ECC_AK)
    nonce = os.urandom(32)
    ak_public = VtpmIssuer(tpm.tcti, ak_template=template).ak_public()
    ISSUED_AKS.add(parse_tpmt_public(ak_public).spki_der())
    bound = bound_key or parse_tpmt_public(ak_public).public_key
    instance_info = b""
    signer = "vcek"
    if variant == AZURE_SEV_SNP:
        instance_info = runtime if runtime is not None else runtime_data(bound)
        data = hashlib.sha256(instance_info).digest() + bytes(32)
    elif variant == AWS_SEV_SNP:
        signer = "vlek"
        data = hashlib.sha512(spki_der(bound)).digest()
    else:
        data = extra_data(USER_DATA, report_nonce or nonce) + bytes(32)
    evidence = amd.evidence(signer, report_data=report_data or data, **report_fields)
    vtpm = VtpmIssuer(
        tpm.tcti,
        variant=variant,
        instance_info=instance_info,
        ak_template=template,
        event_log=encode_header(),  # no boot events on a fresh swtpm, but a log all the same
    ).issue(USER_DATA, nonce)
    document = compose_document(vtpm, SnpEvidence(evidence.report, evidence.signer, evidence.chain))
    return Case(document, nonce, current_pcrs(tpm), ak_public)


#: AKs of the swtpms these tests issued from. A GCP report does not bind the AK, so a GCP
#: verifier must pin it (or certify it); the tests pin every AK they issued with.
ISSUED_AKS: set[bytes] = set()


def validator(amd: Any, variant: str, measurements: Measurements, **kwargs: Any) -> Validator:
    if variant == GCP_SEV_SNP:
        kwargs.setdefault("trusted_ak_keys", frozenset(ISSUED_AKS))
    kwargs.setdefault("roots", amd.roots())
    kwargs.setdefault("clock", lambda: fakeamd.NOW)
    return get_variant(variant).validator(measurements, **kwargs)


VARIANTS = [AZURE_SEV_SNP, AWS_SEV_SNP, GCP_SEV_SNP]


# --- acceptance -----------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_valid_evidence_returns_user_data_and_report_fields(amd, swtpm, variant):
    case = issue(amd, swtpm, variant)
    checker = validator(amd, variant, case.measurements(0, 4, 15), policy=Policy())
    assert isinstance(checker, SnpVtpmValidator)
    assert isinstance(checker, Validator)
    verified = checker.verify(case.document, case.nonce)
    assert verified.user_data == USER_DATA
    assert verified.variant == variant
    assert verified.pcrs == case.pcrs
    snp = verified.details["snp"]
    assert snp["product"] == "Milan"
    assert snp["measurement"] == (bytes([0x11]) * 48).hex()
    assert snp["chip_id"] == (bytes(64) if variant == AWS_SEV_SNP else amd.chip_id).hex()
    assert snp["reported_tcb"]["raw"] == f"{int(amd.tcb):#018x}"
    assert snp["policy"] == "0x30000"
    assert snp["signer"] == ("vlek" if variant == AWS_SEV_SNP else "vcek")
    assert (
        verified.details["ak_spki_sha256"]
        == hashlib.sha256(parse_tpmt_public(case.ak_public).spki_der()).hexdigest()
    )
    # The report roots the AK (no AK certificate needed); it names no platform identity.
    assert json.loads(case.document)["ak_certificate"] is None
    assert verified.identity is None
    assert checker.validate(case.document, case.nonce) == USER_DATA


def test_aws_binding_works_for_an_rsa_ak(amd, swtpm):
    case = issue(amd, swtpm, AWS_SEV_SNP, template=RSA_AK)
    assert parse_tpmt_public(case.ak_public).type == TPM_ALG_RSA
    assert validator(amd, AWS_SEV_SNP, Measurements()).validate(case.document, case.nonce) == (
        USER_DATA
    )


def test_signer_certificates_can_come_from_kds(amd, swtpm):
    """A document without certificates: the VCEK and chain are fetched (fake KDS over HTTP)."""
    case = issue(amd, swtpm, GCP_SEV_SNP)
    doc = json.loads(case.document)
    doc["snp"]["signer_cert"] = None
    doc["snp"]["chain"] = None
    document = json.dumps(doc).encode()
    with fakeamd.FakeKds(amd) as kds:
        fetcher = KdsClient(base_url=kds.url, max_attempts=1, deadline=10.0)
        checker = validator(amd, GCP_SEV_SNP, Measurements(), fetcher=fetcher)
        assert checker.validate(document, case.nonce) == USER_DATA
    assert any(path.startswith("/vcek/v1/Milan/") for path in kds.requests)
    with pytest.raises(MalformedEvidenceError, match="no signer certificate"):
        validator(amd, GCP_SEV_SNP, Measurements()).validate(document, case.nonce)


# --- the AK binding -------------------------------------------------------------------------
BINDING_CHECK = {
    AZURE_SEV_SNP: "snp.azure.ak",
    AWS_SEV_SNP: "snp.aws.report_data",
}


@pytest.mark.parametrize("variant", [AZURE_SEV_SNP, AWS_SEV_SNP])
def test_report_binding_another_ak_than_the_quotes_rejects(amd, swtpm, variant):
    """The quote verifies with the document's AK, but the report vouches for another key."""
    other = (
        rsa.generate_private_key(65537, 2048)
        if variant == AZURE_SEV_SNP
        else ec.generate_private_key(ec.SECP256R1())
    ).public_key()
    case = issue(amd, swtpm, variant, bound_key=other)
    with pytest.raises(ValidationError) as err:
        validator(amd, variant, Measurements()).validate(case.document, case.nonce)
    assert checks(err.value) == {BINDING_CHECK[variant]}


@pytest.mark.parametrize("variant", VARIANTS)
def test_quote_by_another_ak_than_the_bound_one_rejects(amd, swtpm, variant):
    """The document names the AK the report binds, but a different key signed the quote."""
    other = (
        rsa.generate_private_key(65537, 2048)
        if variant == AZURE_SEV_SNP
        else ec.generate_private_key(ec.SECP256R1())
    ).public_key()
    case = issue(amd, swtpm, variant, bound_key=other)
    substituted = substitute_key(case.ak_public, other)
    document = set_ak(case.document, substituted)
    with pytest.raises(ValidationError) as err:
        validator(amd, variant, Measurements()).validate(document, case.nonce)
    # GCP's report does not bind the AK: there the key must also be one the verifier pinned.
    expected = {"quote.signature"} | ({"ak.trusted"} if variant == GCP_SEV_SNP else set())
    assert checks(err.value) == expected


def test_azure_ecc_ak_cannot_be_hclakpub(amd, swtpm):
    """An ECC AK cannot equal the RSA ``HCLAkPub``; the runtime-data hash is still checked."""
    rsa_key = rsa.generate_private_key(65537, 2048).public_key()
    case = issue(
        amd,
        swtpm,
        AZURE_SEV_SNP,
        template=ECC_AK,
        runtime=runtime_data(rsa_key),
        report_data=bytes(64),
    )
    with pytest.raises(ValidationError) as err:
        validator(amd, AZURE_SEV_SNP, Measurements()).validate(case.document, case.nonce)
    assert checks(err.value) == {"snp.azure.ak", "snp.azure.runtime_data"}


def test_azure_report_data_not_bound_to_the_runtime_data_rejects(amd, swtpm):
    case = issue(amd, swtpm, AZURE_SEV_SNP, report_data=hashlib.sha512(b"other").digest())
    with pytest.raises(ValidationError) as err:
        validator(amd, AZURE_SEV_SNP, Measurements()).validate(case.document, case.nonce)
    assert checks(err.value) == {"snp.azure.runtime_data", "snp.azure.report_data_tail"}


def test_gcp_report_for_another_nonce_rejects(amd, swtpm):
    """A replayed report (bound to an old nonce) next to a fresh quote: only the report fails."""
    case = issue(amd, swtpm, GCP_SEV_SNP, report_nonce=os.urandom(32))
    with pytest.raises(ValidationError) as err:
        validator(amd, GCP_SEV_SNP, Measurements()).validate(case.document, case.nonce)
    assert checks(err.value) == {"snp.gcp.report_data"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_wrong_nonce_rejects(amd, swtpm, variant):
    case = issue(amd, swtpm, variant)
    with pytest.raises(ValidationError) as err:
        validator(amd, variant, Measurements()).validate(case.document, os.urandom(32))
    expected = {"quote.qualifying_data"}
    if variant == GCP_SEV_SNP:
        expected.add("snp.gcp.report_data")
    assert checks(err.value) == expected


# --- the SNP stage --------------------------------------------------------------------------
def _flip_report_byte(document: bytes, offset: int) -> bytes:
    doc = json.loads(document)
    report = bytearray(base64.b64decode(doc["snp"]["report"]))
    report[offset] ^= 0x01
    doc["snp"]["report"] = base64.b64encode(bytes(report)).decode()
    return json.dumps(doc).encode()


MEASUREMENT_OFFSET = 0x090


@pytest.mark.parametrize("variant", VARIANTS)
def test_broken_report_signature_rejects(amd, swtpm, variant):
    case = issue(amd, swtpm, variant)
    document = _flip_report_byte(case.document, MEASUREMENT_OFFSET)
    with pytest.raises(ValidationError) as err:
        validator(amd, variant, Measurements()).validate(document, case.nonce)
    assert checks(err.value) == {"snp.report.signature"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_report_from_unpinned_hierarchy_rejects(amd, swtpm, variant):
    """Roots that pin another hierarchy: the (otherwise perfect) chain is not trusted."""
    case = issue(amd, swtpm, variant)
    stranger = fakeamd.FakeAmd("Milan")
    with pytest.raises(ValidationError) as err:
        validator(amd, variant, Measurements(), roots=stranger.roots()).validate(
            case.document, case.nonce
        )
    assert any(check.startswith("snp.") for check in checks(err.value))
    assert not any(check.startswith(("quote.", "pcr[")) for check in checks(err.value))


@pytest.mark.parametrize("variant", VARIANTS)
def test_snp_policy_and_pcr_failures_are_reported_together(amd, swtpm, variant):
    case = issue(amd, swtpm, variant, policy=0x30000 | DEBUG_BIT)
    wrong = Measurements.from_dict({"4": "ab" * 32, "0": case.pcrs[0].hex()})
    with pytest.raises(ValidationError) as err:
        validator(amd, variant, wrong, policy=Policy()).validate(case.document, case.nonce)
    assert checks(err.value) == {"snp.policy.debug", "pcr[4]"}
    assert "snp.policy.debug" in str(err.value)
    assert "pcr[4]" in str(err.value)


def test_failures_of_all_three_stages_are_listed_at_once(amd, swtpm):
    """Broken report signature (SNP), an unbound AK (binding) and a PCR mismatch (quote)."""
    other = rsa.generate_private_key(65537, 2048).public_key()
    case = issue(amd, swtpm, AZURE_SEV_SNP, bound_key=other)
    document = _flip_report_byte(case.document, MEASUREMENT_OFFSET)
    wrong = Measurements().with_pcr(4, bytes([0x44]) * 32)
    with pytest.raises(ValidationError) as err:
        validator(amd, AZURE_SEV_SNP, wrong).validate(document, case.nonce)
    assert checks(err.value) == {"snp.report.signature", "snp.azure.ak", "pcr[4]"}
    assert err.value.subject == f"{AZURE_SEV_SNP} evidence"


def test_chain_from_the_trust_directory_roots(amd, swtpm):
    """A document with only the VCEK: the ASK and ARK come from the configured roots."""
    case = issue(amd, swtpm, AZURE_SEV_SNP)
    document = _edit(case.document, lambda d: d["snp"].update(chain=None))
    roots = amd.roots().with_certificates([amd.ask, amd.ark])
    assert (
        validator(amd, AZURE_SEV_SNP, Measurements(), roots=roots).validate(document, case.nonce)
        == USER_DATA
    )
    with pytest.raises(ValidationError) as err:
        validator(amd, AZURE_SEV_SNP, Measurements()).validate(document, case.nonce)
    assert all(check.startswith("snp.") for check in checks(err.value))


@pytest.mark.parametrize("variant", VARIANTS)
def test_measurement_mismatch_rejects(amd, swtpm, variant):
    case = issue(amd, swtpm, variant)
    wrong = case.measurements(0, 4).with_pcr(9, bytes([0x99]) * 32)
    with pytest.raises(ValidationError) as err:
        validator(amd, variant, wrong).validate(case.document, case.nonce)
    assert checks(err.value) == {"pcr[9]"}


def test_warn_only_pcr_and_snp_findings_travel_in_the_verdict(amd, swtpm):
    from constellation.attestation.snp import AllowList

    case = issue(amd, swtpm, GCP_SEV_SNP)
    measurements = Measurements().with_pcr(9, bytes([0x99]) * 32, warn_only=True)
    policy = Policy(measurements=AllowList.of([bytes(48)], enforce=False))
    verified = validator(amd, GCP_SEV_SNP, measurements, policy=policy).verify(
        case.document, case.nonce
    )
    assert {w.check for w in verified.warnings} == {"pcr[9]", "snp.measurement"}


def test_expired_certificates_reject_at_the_validators_clock(amd, swtpm):
    case = issue(amd, swtpm, GCP_SEV_SNP)
    late = datetime(2040, 1, 1, tzinfo=UTC)
    with pytest.raises(ValidationError) as err:
        validator(amd, GCP_SEV_SNP, Measurements(), clock=lambda: late).validate(
            case.document, case.nonce
        )
    assert checks(err.value) == {"snp.vcek.validity", "snp.ask.validity", "snp.ark.validity"}
    assert all(f.detail == "expired" for f in err.value.failures)


def test_document_of_another_variant_rejects(amd, swtpm):
    case = issue(amd, swtpm, GCP_SEV_SNP)
    with pytest.raises(ValidationError) as err:
        validator(amd, AWS_SEV_SNP, Measurements()).validate(case.document, case.nonce)
    assert "document.variant" in checks(err.value)


# --- malformed input ------------------------------------------------------------------------
def _edit(document: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    doc = json.loads(document)
    change(doc)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("snp"), "no 'snp' object"),
        (lambda d: d["snp"].update(report="not base64!"), "not base64"),
        (lambda d: d["snp"].update(report=None), "must be a base64 string"),
        (lambda d: d["snp"].update(report=base64.b64encode(b"short").decode()), "report"),
        (lambda d: d["snp"].update(signer_cert=base64.b64encode(b"junk").decode()), "certificate"),
    ],
)
def test_malformed_snp_member_is_a_typed_error(amd, swtpm, change, message):
    case = issue(amd, swtpm, GCP_SEV_SNP)
    with pytest.raises(MalformedEvidenceError, match=message):
        validator(amd, GCP_SEV_SNP, Measurements()).validate(
            _edit(case.document, change), case.nonce
        )


def test_compose_document_rejects_non_documents():
    with pytest.raises(MalformedEvidenceError):
        compose_document(b"[]", SnpEvidence(b"report"))
    with pytest.raises(MalformedEvidenceError):
        compose_document(b"\xff", SnpEvidence(b"report"))
    # 1000-deep JSON used to unwind the stack (RecursionError) in ``json.loads``.
    with pytest.raises(MalformedEvidenceError, match="nesting deeper"):
        compose_document(b"[" * 1000 + b"]" * 1000, SnpEvidence(b"report"))


# --- the registry ---------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_registry_has_validators_but_no_issuers(variant):
    built = get_variant(variant).validator(Measurements(), policy=Policy(), roots=Roots.amd())
    assert isinstance(built, SnpVtpmValidator)
    assert built.variant == variant
    with pytest.raises(VariantUnavailableError, match="SEV-SNP guest"):
        get_variant(variant).issuer()


def test_unknown_binding_variant_or_product_is_refused():
    with pytest.raises(ValueError, match="no SEV-SNP AK binding"):
        SnpVtpmValidator(Measurements(), variant="qemu-vtpm")
    with pytest.raises(ValueError, match="unknown SEV-SNP product"):
        SnpVtpmValidator(Measurements(), variant=GCP_SEV_SNP, product="Naples")
    assert SnpVtpmValidator(Measurements(), variant=GCP_SEV_SNP, product="milan")


# --- the real Azure vector ------------------------------------------------------------------
@pytest.fixture(scope="module")
def azure_vector() -> dict[str, bytes]:
    if not (VECTORS / "attestation.bin").is_file():
        pytest.skip(f"real Azure SEV-SNP vectors not found at {VECTORS} (../shared/vectors absent)")
    return {
        name: (VECTORS / file).read_bytes()
        for name, file in (
            ("report", "attestation.bin"),
            ("vcek", "vcek.cert"),
            ("chain", "certchain.pem"),
            ("runtime", "runtimedata.bin"),
        )
    }


def _azure_document(vector: dict[str, bytes], tpm: Swtpm, nonce: bytes) -> bytes:
    vtpm = VtpmIssuer(
        tpm.tcti,
        variant=AZURE_SEV_SNP,
        instance_info=vector["runtime"],
        ak_template=RSA_AK,
        event_log=encode_header(),
    ).issue(USER_DATA, nonce)
    return compose_document(vtpm, SnpEvidence(vector["report"], vector["vcek"], vector["chain"]))


def test_real_azure_snp_and_binding_pass_and_the_unrelated_quote_fails(azure_vector, swtpm):
    """Real report + runtime data through the SNP and binding stages (AMD's pinned roots).

    The AK named in ``runtimedata.bin`` is not available, so the document carries that AK's
    public key next to a quote signed by swtpm's AK: SNP and binding pass, the quote fails.
    """
    from constellation.attestation.snp import parse_hcl_runtime_data

    nonce = os.urandom(32)
    document = _azure_document(azure_vector, swtpm, nonce)
    hcl_key = parse_hcl_runtime_data(azure_vector["runtime"]).ak_public_key
    swtpm_ak = base64.b64decode(json.loads(document)["ak_public"])
    with_hcl_ak = set_ak(document, substitute_key(swtpm_ak, hcl_key))
    checker = get_variant(AZURE_SEV_SNP).validator(
        Measurements(), policy=Policy(), roots=Roots.amd(), clock=lambda: AZURE_VECTOR_CLOCK
    )
    with pytest.raises(ValidationError) as err:
        checker.validate(with_hcl_ak, nonce)
    assert checks(err.value) == {"quote.signature"}
    # The swtpm AK itself: the quote verifies, and the binding names the AK mismatch.
    with pytest.raises(ValidationError) as err:
        checker.validate(document, nonce)
    assert checks(err.value) == {"snp.azure.ak"}


def test_real_azure_report_tampered_fails_the_snp_stage_too(azure_vector, swtpm):
    nonce = os.urandom(32)
    document = _flip_report_byte(_azure_document(azure_vector, swtpm, nonce), MEASUREMENT_OFFSET)
    checker = get_variant(AZURE_SEV_SNP).validator(
        Measurements(), roots=Roots.amd(), clock=lambda: AZURE_VECTOR_CLOCK
    )
    with pytest.raises(ValidationError) as err:
        checker.validate(document, nonce)
    assert checks(err.value) == {"snp.report.signature", "snp.azure.ak"}


def test_a_gcp_ak_that_nobody_pinned_or_certified_is_refused(amd, swtpm):
    """A GCP report proves a fresh SNP guest but does not name the AK that quoted the PCRs."""
    case = issue(amd, swtpm, GCP_SEV_SNP)
    checker = validator(amd, GCP_SEV_SNP, Measurements(), trusted_ak_keys=None)
    with pytest.raises(ValidationError) as err:
        checker.validate(case.document, case.nonce)
    assert checks(err.value) == {"ak.root"}
