"""vTPM evidence whose attestation key (AK) is rooted in an AMD SEV-SNP report.

On the SNP clouds the vTPM runs inside the confidential VM's firmware, and the SNP report
(signed by the chip's V[CL]EK, chained to AMD's pinned ARK) binds the vTPM's AK through
REPORT_DATA (DESIGN.md §4.1). So a quote is trusted only when three stages all hold:

1. SNP: the report verifies fully (signature, chain to a pinned root, TCB rules, the
   configured ``snp.Policy``) at the caller's clock;
2. binding: the variant's REPORT_DATA rule ties THE AK IN THE DOCUMENT to that report
   (Azure: SHA-256 of the HCL runtime data, whose ``HCLAkPub`` equals the AK; AWS: SHA-512 of
   the AK's SPKI; GCP: the extra data of ``(user_data, nonce)``, so the report itself is
   fresh);
3. vTPM: the quote verifies with that AK over the qualifying data of DESIGN.md §3, the event
   log replays and the PCRs match the expected measurements.

Every stage runs even when another failed, and one ``ValidationError`` lists the failures of
all of them. The document is a vTPM document (``vtpm`` module) with one more member::

    "snp": {"report": <base64 report>,
            "signer_cert": <base64 VCEK/VLEK, DER or PEM> | null,
            "chain": <base64 PEM: ASK or ASVK, then ARK> | null}

For Azure the document's ``instance_info`` is the HCL runtime-data JSON (its exact bytes are
hashed into REPORT_DATA and into the quote's qualifying data). A missing signer certificate or
chain may come from the configured roots (trust directory) or a ``KdsFetcher``; that fetcher
is the only I/O a validator may do, and only when the caller configured one.

Issuing needs an SEV-SNP guest and the cloud's vTPM, so this build has validators only;
``compose_document`` is the pure step an issuer on such hardware uses to attach its report.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from constellation.attestation.boundedparse import loads_json
from constellation.attestation.errors import Failure, MalformedEvidenceError
from constellation.attestation.eventlog import DEFAULT_REPLAY_PCRS
from constellation.attestation.evidence import VerifiedEvidence, extra_data
from constellation.attestation.measurements import Measurements
from constellation.attestation.snp.bindings import (
    AwsAkBinding,
    AzureRuntimeDataBinding,
    GcpExtraDataBinding,
)
from constellation.attestation.snp.certs import Roots
from constellation.attestation.snp.errors import VerificationError
from constellation.attestation.snp.kds import KdsFetcher
from constellation.attestation.snp.policy import Policy, ReportCheck
from constellation.attestation.snp.products import normalize_product
from constellation.attestation.snp.report import Report, parse_report
from constellation.attestation.snp.verify import VerifiedReport, Verifier
from constellation.attestation.tpm import TpmPublic
from constellation.attestation.vtpm import MAX_DOCUMENT_SIZE, QuoteFindings, VtpmValidator

AZURE_SEV_SNP = "azure-sev-snp"
AWS_SEV_SNP = "aws-sev-snp"
GCP_SEV_SNP = "gcp-sev-snp"
SNP_MEMBER = "snp"
# A report is 1184 bytes, a certificate chain a few KiB; anything far larger is not evidence.
MAX_SNP_FIELD_SIZE = 64 << 10

Clock = Callable[[], datetime]
# Public numbers of no one's key (n = 2^2047 + 1); see ``AzureAkBinding``.
_STAND_IN_KEY = rsa.RSAPublicNumbers(65537, (1 << 2047) | 1).public_key()


def _utc_now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------------------------
# The SNP member of the document


@dataclass(frozen=True)
class SnpEvidence:
    """The SNP part of a document: the report and, when the guest has them, its certificates."""

    report: bytes
    signer_cert: bytes | None = None
    chain: bytes | None = None


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def compose_document(vtpm_document: bytes, evidence: SnpEvidence) -> bytes:
    """A vTPM document with ``evidence`` attached as its ``snp`` member.

    Pure: an issuer on SNP hardware quotes with its vTPM (``VtpmIssuer`` with the variant's
    name and, on Azure, the runtime data as ``instance_info``), reads its report and certificates
    and joins them here. Raises ``MalformedEvidenceError`` if ``vtpm_document`` is not one.
    """
    doc = loads_json(
        vtpm_document,
        max_size=MAX_DOCUMENT_SIZE,
        error=MalformedEvidenceError,
        what="vTPM document",
    )
    if not isinstance(doc, dict):
        raise MalformedEvidenceError("vTPM document must be a JSON object")
    doc[SNP_MEMBER] = {
        "report": _b64(evidence.report),
        "signer_cert": _b64(evidence.signer_cert),
        "chain": _b64(evidence.chain),
    }
    return json.dumps(doc, sort_keys=True).encode()


def _snp_field(member: Mapping[str, Any], name: str, *, required: bool) -> bytes | None:
    value = member.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise MalformedEvidenceError(f"SNP evidence: field '{name}' must be a base64 string")
    if len(value) > MAX_SNP_FIELD_SIZE * 4 // 3 + 4:
        raise MalformedEvidenceError(
            f"SNP evidence: field '{name}' larger than {MAX_SNP_FIELD_SIZE} bytes"
        )
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedEvidenceError(f"SNP evidence: field '{name}' is not base64") from None


def parse_snp_member(document: Mapping[str, Any]) -> SnpEvidence:
    """The ``snp`` member of a parsed document (``MalformedEvidenceError`` if absent or bad)."""
    member = document.get(SNP_MEMBER)
    if not isinstance(member, dict):
        raise MalformedEvidenceError(
            f"document has no '{SNP_MEMBER}' object: not SEV-SNP-backed vTPM evidence"
        )
    report = _snp_field(member, "report", required=True)
    assert report is not None  # required
    return SnpEvidence(
        report=report,
        signer_cert=_snp_field(member, "signer_cert", required=False),
        chain=_snp_field(member, "chain", required=False),
    )


# --------------------------------------------------------------------------------------------
# How each variant binds the AK


@dataclass(frozen=True)
class AzureAkBinding:
    """Azure's binding for an AK of any type: an AK that is not RSA cannot be ``HCLAkPub``.

    Wraps ``AzureRuntimeDataBinding`` so that the runtime-data hash is still checked (and
    reported) when the document's AK is not an RSA key.
    """

    runtime_data: bytes = field(repr=False)
    ak: TpmPublic = field(repr=False)

    def check(self, report: Report) -> list[Failure]:
        key = self.ak.public_key
        if isinstance(key, rsa.RSAPublicKey):
            return AzureRuntimeDataBinding(self.runtime_data, key).check(report)
        found = [
            Failure(
                "snp.azure.ak",
                "an RSA AK equal to HCLAkPub (an RSA JWK)",
                f"a {type(key).__name__.lstrip('_')} AK",
            )
        ]
        # Only the runtime-data checks of the wrapped binding count here: its key comparison
        # is moot (and already reported above), so any RSA key serves as the stand-in.
        found.extend(
            f
            for f in AzureRuntimeDataBinding(self.runtime_data, _STAND_IN_KEY).check(report)
            if f.check != "snp.azure.ak"
        )
        return found


Binder = Callable[[QuoteFindings, bytes], ReportCheck]
"""Builds a variant's binding check from the vTPM findings (AK, user data, instance info) and
the nonce."""


def azure_binding(findings: QuoteFindings, nonce: bytes) -> ReportCheck:
    """Azure: REPORT_DATA[0:32] = SHA-256(instance_info); its ``HCLAkPub`` is the AK."""
    return AzureAkBinding(findings.instance_info, findings.ak)


def aws_binding(findings: QuoteFindings, nonce: bytes) -> ReportCheck:
    """AWS: REPORT_DATA = SHA-512(DER SPKI of the document's AK)."""
    return AwsAkBinding(findings.ak.spki_der())


def gcp_binding(findings: QuoteFindings, nonce: bytes) -> ReportCheck:
    """GCP: REPORT_DATA = extra_data(user_data, nonce), zero-padded: the report is fresh."""
    return GcpExtraDataBinding(extra_data(findings.user_data, nonce))


BINDERS: Mapping[str, Binder] = {
    AZURE_SEV_SNP: azure_binding,
    AWS_SEV_SNP: aws_binding,
    GCP_SEV_SNP: gcp_binding,
}


# --------------------------------------------------------------------------------------------
# The validator


def snp_details(verified: VerifiedReport) -> dict[str, Any]:
    """Public report fields for ``VerifiedEvidence.details['snp']`` (logs, handlers)."""
    report = verified.report
    return {
        **report.to_dict(),
        "product": verified.product,
        "signer": verified.signer,
        "signer_fingerprint": verified.signer_fingerprint.hex(),
    }


class SnpVtpmValidator:
    """Validates SEV-SNP-backed vTPM evidence of one variant. Pure apart from ``fetcher``.

    ``measurements`` are the expected PCRs; ``policy`` the SNP policy (strict defaults; the
    variant's binding is appended to its checks); ``roots`` the pinned AMD hierarchy (AMD's
    by default, with any trust-directory certificates); ``fetcher`` fetches certificates the
    document and roots lack; ``clock`` is the certificate-validity clock; ``product`` names
    the product line when the report cannot (version 2 reports carry no CPUID). ``verifier``
    is the SNP verifier whose chain memo is reused across documents (one per validator by
    default). The remaining keywords go to the ``VtpmValidator`` doing the quote stage.
    """

    def __init__(
        self,
        measurements: Measurements,
        *,
        variant: str,
        policy: Policy | None = None,
        roots: Roots | None = None,
        fetcher: KdsFetcher | None = None,
        clock: Clock = _utc_now,
        product: str | None = None,
        verifier: Verifier | None = None,
        trusted_ak_keys: Collection[bytes] | None = None,
        platform_roots: Sequence[x509.Certificate] | None = None,
        require_event_log: bool = True,
        replay_pcrs: Sequence[int] = DEFAULT_REPLAY_PCRS,
    ) -> None:
        if variant not in BINDERS:
            raise ValueError(
                f"no SEV-SNP AK binding for variant {variant!r} (known: {', '.join(BINDERS)})"
            )
        if product is not None:
            product = normalize_product(product)  # ValueError names the known product lines
        self._variant = variant
        self._binder = BINDERS[variant]
        self._policy = policy or Policy()
        self._fetcher = fetcher
        self._clock = clock
        self._product = product
        self._verifier = verifier or Verifier(roots)
        self._roots = roots or self._verifier.roots
        self._vtpm = VtpmValidator(
            measurements,
            variant=variant,
            trusted_ak_keys=trusted_ak_keys,
            platform_roots=platform_roots,
            # Azure's and AWS's reports bind the AK itself (stage 2 above). GCP's binds only the
            # extra data: the report proves a fresh SNP guest, not that this AK lives in it, so
            # a GCP AK must be pinned (trusted_ak_keys) or certified (platform_roots).
            ak_rooted_elsewhere=variant != GCP_SEV_SNP,
            require_event_log=require_event_log,
            replay_pcrs=replay_pcrs,
        )

    @property
    def variant(self) -> str:
        return self._variant

    @property
    def measurements(self) -> Measurements:
        return self._vtpm.measurements

    @property
    def policy(self) -> Policy:
        return self._policy

    def _signer_cert(self, evidence: SnpEvidence, report: Report) -> bytes:
        """The V[CL]EK from the document, or the VCEK from the fetcher by chip id and TCB."""
        if evidence.signer_cert is not None:
            return evidence.signer_cert
        product = self._product or report.product
        if self._fetcher is None or report.signer != "vcek" or product is None:
            raise MalformedEvidenceError(
                "SNP evidence carries no signer certificate and none can be fetched "
                "(configure a KDS fetcher and, for version 2 reports, the product line)"
            )
        return self._fetcher.vcek(product, report.chip_id, report.reported_tcb)

    def _snp_stage(
        self, evidence: SnpEvidence, binding: ReportCheck
    ) -> tuple[VerifiedReport | None, list[Failure], list[Failure]]:
        """(verified report or None, failures, warnings) of the SNP and binding stages."""
        report = parse_report(evidence.report, product=self._product)
        signer_cert = self._signer_cert(evidence, report)
        policy = replace(self._policy, checks=(*self._policy.checks, binding))
        try:
            verified = self._verifier.verify_report(
                report,
                signer_cert,
                evidence.chain,
                at=self._clock(),
                policy=policy,
                product=self._product,
                roots=self._roots,
                fetcher=self._fetcher,
            )
        except VerificationError as err:
            return None, list(err.failures), list(err.warnings)
        return verified, [], list(verified.warnings)

    def verify(self, document: bytes, nonce: bytes) -> VerifiedEvidence:
        """Return the verified evidence or raise ``ValidationError`` listing every failure
        of every stage; ``MalformedEvidenceError`` for input that does not parse, ``KdsError``
        when a certificate had to be fetched and could not be (nothing was decided then)."""
        findings = self._vtpm.examine(document, nonce)
        evidence = parse_snp_member(findings.document)
        binding = self._binder(findings, nonce)
        verified, failures, warnings = self._snp_stage(evidence, binding)
        details = {} if verified is None else {"snp": snp_details(verified)}
        return findings.decide(self._variant, failures=failures, warnings=warnings, details=details)

    def validate(self, document: bytes, nonce: bytes) -> bytes:
        return self.verify(document, nonce).user_data


def azure_validator(measurements: Measurements, **kwargs: Any) -> SnpVtpmValidator:
    """``azure-sev-snp``: VCEK-signed report bound to the HCL runtime data's ``HCLAkPub``."""
    return SnpVtpmValidator(measurements, variant=AZURE_SEV_SNP, **kwargs)


def aws_validator(measurements: Measurements, **kwargs: Any) -> SnpVtpmValidator:
    """``aws-sev-snp``: VLEK-signed report whose REPORT_DATA is SHA-512 of the AK's SPKI."""
    return SnpVtpmValidator(measurements, variant=AWS_SEV_SNP, **kwargs)


def gcp_validator(measurements: Measurements, **kwargs: Any) -> SnpVtpmValidator:
    """``gcp-sev-snp``: report whose REPORT_DATA is the evidence's extra data."""
    return SnpVtpmValidator(measurements, variant=GCP_SEV_SNP, **kwargs)


ISSUER_UNAVAILABLE = (
    "issuing needs an AMD SEV-SNP guest (its /dev/sev-guest report) and the cloud's vTPM; "
    "this build validates such evidence but does not issue it"
)
