"""AMD SEV-SNP attestation reports, verified in pure Python against AMD's pinned roots.

``parse_report`` decodes a report; ``verify`` checks it (signature, certificate chain to a
pinned ARK, TCB rules, policy) and returns it or raises ``VerificationError`` listing every
failed check. ``bindings`` ties REPORT_DATA to a cloud variant's attestation key; ``kds``
fetches AMD certificates for verifiers that are not handed a chain.
"""

from constellation.attestation.snp.bindings import (
    AwsAkBinding,
    AzureRuntimeDataBinding,
    GcpExtraDataBinding,
    HclRuntimeData,
    parse_hcl_runtime_data,
)
from constellation.attestation.snp.certs import (
    AMD_PINS,
    AmdCertificate,
    AmdExtensions,
    ProductPins,
    Roots,
    load_certificate,
    load_certificates,
)
from constellation.attestation.snp.errors import (
    KdsError,
    KdsNotFoundError,
    KdsOfflineError,
    KdsRateLimitedError,
    MalformedCertificateError,
    MalformedReportError,
    TrustStoreError,
    VerificationError,
)
from constellation.attestation.snp.kds import KdsClient, KdsFetcher, load_trust_directory
from constellation.attestation.snp.policy import AllOf, AllowList, AnyOf, Policy, ReportCheck
from constellation.attestation.snp.products import GENOA, MILAN, PRODUCTS, TURIN
from constellation.attestation.snp.report import (
    REPORT_SIZE,
    GuestPolicy,
    Report,
    parse_report,
    report_bytes,
)
from constellation.attestation.snp.tcb import TcbVersion
from constellation.attestation.snp.verify import (
    VerifiedReport,
    Verifier,
    verify,
    verify_report,
)

__all__ = [
    "AMD_PINS",
    "GENOA",
    "MILAN",
    "PRODUCTS",
    "REPORT_SIZE",
    "TURIN",
    "AllOf",
    "AllowList",
    "AmdCertificate",
    "AmdExtensions",
    "AnyOf",
    "AwsAkBinding",
    "AzureRuntimeDataBinding",
    "GcpExtraDataBinding",
    "GuestPolicy",
    "HclRuntimeData",
    "KdsClient",
    "KdsError",
    "KdsFetcher",
    "KdsNotFoundError",
    "KdsOfflineError",
    "KdsRateLimitedError",
    "MalformedCertificateError",
    "MalformedReportError",
    "Policy",
    "ProductPins",
    "Report",
    "ReportCheck",
    "Roots",
    "TcbVersion",
    "TrustStoreError",
    "VerificationError",
    "VerifiedReport",
    "Verifier",
    "load_certificate",
    "load_certificates",
    "load_trust_directory",
    "parse_hcl_runtime_data",
    "parse_report",
    "report_bytes",
    "verify",
    "verify_report",
]
