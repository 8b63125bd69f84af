"""Verify an SEV-SNP attestation report against AMD's pinned hierarchy and a policy.

Checks, all evaluated and all reported (``VerificationError.failures``):

1. Report shape: known VERSION, SIGNATURE_ALGO = ECDSA P-384/SHA-384, reserved bytes zero,
   SIGNING_KEY names a key.
2. Certificates: the V[CL]EK chains through a pinned ASK (VCEK) or ASVK (VLEK) to the pinned
   ARK of one product line, every link RSA-PSS/SHA-384; each certificate is within its
   validity window at the caller's clock ``at``; the V[CL]EK key is ECDSA P-384.
3. Signature: the V[CL]EK signed bytes 0x000-0x29F.
4. Signer: the report's SIGNING_KEY matches the certificate kind (VCEK vs VLEK).
5. Product: the explicit product, CPUID (v3+), the certificate's productName and the pins
   agree.
6. TCB: REPORTED_TCB equals the TCB in the V[CL]EK; COMMITTED_TCB <= CURRENT_TCB and the
   certified TCB <= CURRENT_TCB (component-wise).
7. CHIP_ID equals the VCEK's hwID (Turin: its first 8 bytes, rest zero) unless masked and
   the policy allows that.
8. The ``Policy``: minimum TCB / launch TCB, VMPL, debug, migration agent, report data,
   allow-lists, and any composed checks (variant bindings).

Pure: bytes, trusted roots, a policy and a clock in; a ``Report`` out or an exception. The only
optional I/O is a caller-supplied ``fetcher`` used when the chain is not supplied. Chain checks
(RSA-4096 signature verifications) depend only on the certificate bytes and the roots, so a
``Verifier`` memoizes them keyed by SHA-256 of the inputs; a warm verification costs one
ECDSA P-384 verification plus parsing.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from constellation.attestation.errors import Failure
from constellation.attestation.snp.certs import (
    HWID_SIZE,
    TURIN_HWID_SIZE,
    AmdCertificate,
    Roots,
    VerifiedChain,
    load_certificate,
    load_certificates,
    verify_chain,
)
from constellation.attestation.snp.errors import VerificationError
from constellation.attestation.snp.kds import KdsFetcher
from constellation.attestation.snp.policy import Policy
from constellation.attestation.snp.products import TURIN, normalize_product
from constellation.attestation.snp.report import (
    SIGNATURE_ALGO_ECDSA_P384_SHA384,
    SUPPORTED_VERSIONS,
    Report,
    parse_report,
    signature_der,
)
from constellation.attestation.snp.tcb import TcbVersion

_ECDSA_SHA384 = ec.ECDSA(hashes.SHA384())
DEFAULT_CACHE_SIZE = 256


@dataclass(frozen=True)
class VerifiedReport:
    """A report that passed every enforced check, with what was learned on the way."""

    report: Report
    product: str
    signer: str
    signer_fingerprint: bytes
    warnings: tuple[Failure, ...]


def _tcb_not_above(value: TcbVersion, ceiling: TcbVersion) -> list[str]:
    """Components where ``value`` exceeds ``ceiling``."""
    return ceiling.below(value)


class Verifier:
    """Verifies reports; memoizes certificate parsing and chain checks by content hash.

    Safe to share between threads. ``roots`` defaults to AMD's pins; tests pass fake pins.
    """

    def __init__(self, roots: Roots | None = None, *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self.roots = roots or Roots.amd()
        self._cache: OrderedDict[tuple[bytes, bytes, Roots, str | None], VerifiedChain] = (
            OrderedDict()
        )
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def chain(
        self,
        signer_cert: bytes,
        chain: bytes | None,
        *,
        roots: Roots | None = None,
        product: str | None = None,
    ) -> VerifiedChain:
        """The (memoized) chain verdict for these certificate bytes."""
        roots = roots or self.roots
        key = (
            hashlib.sha256(signer_cert).digest(),
            hashlib.sha256(chain or b"").digest(),
            roots,
            product,
        )
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        leaf = load_certificate(signer_cert)
        supplied: list[AmdCertificate] = load_certificates(chain) if chain else []
        verdict = verify_chain(leaf, supplied, roots, product_hint=product)
        with self._lock:
            self._cache[key] = verdict
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return verdict

    def verify_report(
        self,
        report: bytes | Report,
        signer_cert: bytes,
        chain: bytes | None = None,
        *,
        at: datetime | None = None,
        policy: Policy | None = None,
        product: str | None = None,
        roots: Roots | None = None,
        fetcher: KdsFetcher | None = None,
    ) -> VerifiedReport:
        """Verify and return the report with its warnings; raise ``VerificationError``."""
        if product is not None:
            try:
                product = normalize_product(product)
            except ValueError as err:
                raise VerificationError(
                    [Failure("snp.product", "Milan, Genoa or Turin", str(err))]
                ) from None
        parsed = report if isinstance(report, Report) else parse_report(report, product=product)
        policy = policy or Policy()
        at = at or datetime.now(UTC)
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)

        verdict = self.chain(signer_cert, chain, roots=roots, product=product)
        if fetcher is not None and (verdict.intermediate is None or verdict.root is None):
            kind = verdict.extensions.kind or parsed.signer
            wanted = product or parsed.product or verdict.product
            if wanted is not None and kind in ("vcek", "vlek"):
                fetched = fetcher.cert_chain(wanted, kind)
                verdict = self.chain(
                    signer_cert, (chain or b"") + b"\n" + fetched, roots=roots, product=product
                )

        failures: list[Failure] = list(verdict.failures)
        failures.extend(verdict.validity_failures(at))

        # Product agreement; re-read TCBs in Turin layout when only the certificate knew.
        resolved = product or parsed.product or verdict.product
        for source, named in (("CPUID", parsed.product), ("certificate chain", verdict.product)):
            if resolved is not None and named is not None and named != resolved:
                failures.append(Failure("snp.product", resolved, f"{named} (from {source})"))
        if resolved is None:
            failures.append(
                Failure("snp.product", "a known product line", "could not be determined")
            )
        if (resolved == TURIN) != parsed.current_tcb.turin:
            parsed = parse_report(parsed.raw, product=resolved)

        failures.extend(self._shape_failures(parsed))
        failures.extend(self._signature_failures(parsed, verdict))
        failures.extend(self._tcb_failures(parsed, verdict, turin=resolved == TURIN))
        failures.extend(self._chip_failures(parsed, verdict, policy, resolved))
        found = policy.check(parsed)
        failures.extend(f for f in found if f.enforced)
        warnings = tuple(f for f in found if not f.enforced)
        if failures:
            raise VerificationError(failures, warnings)
        assert resolved is not None  # a missing product is a failure above
        return VerifiedReport(
            report=parsed,
            product=resolved,
            signer=verdict.leaf_label,
            signer_fingerprint=verdict.leaf.fingerprint,
            warnings=warnings,
        )

    @staticmethod
    def _shape_failures(report: Report) -> list[Failure]:
        found = []
        if report.version not in SUPPORTED_VERSIONS:
            found.append(
                Failure(
                    "snp.report.version",
                    "one of " + ", ".join(map(str, sorted(SUPPORTED_VERSIONS))),
                    str(report.version),
                )
            )
        if report.signature_algo != SIGNATURE_ALGO_ECDSA_P384_SHA384:
            found.append(
                Failure(
                    "snp.report.signature_algo",
                    f"{SIGNATURE_ALGO_ECDSA_P384_SHA384} (ECDSA P-384 with SHA-384)",
                    str(report.signature_algo),
                )
            )
        reserved = report.reserved_violations()
        if reserved:
            found.append(
                Failure(
                    "snp.report.reserved", "reserved bytes zero", "set in " + ", ".join(reserved)
                )
            )
        return found

    @staticmethod
    def _signature_failures(report: Report, verdict: VerifiedChain) -> list[Failure]:
        found = []
        label = verdict.leaf_label
        if report.signer != label:
            found.append(
                Failure(
                    "snp.signer",
                    f"report signed by the {label.upper()} the certificate names",
                    f"report SIGNING_KEY says {report.signer}",
                )
            )
        if verdict.leaf_key is None:
            found.append(
                Failure(
                    "snp.report.signature",
                    f"ECDSA P-384 signature by the {label.upper()}",
                    "no usable key",
                )
            )
            return found
        der = signature_der(report)
        try:
            if der is None:
                raise InvalidSignature
            verdict.leaf_key.verify(der, report.signed_bytes, _ECDSA_SHA384)
        except InvalidSignature:
            found.append(
                Failure(
                    "snp.report.signature",
                    f"ECDSA P-384 signature by {verdict.leaf.describe()}",
                    "signature does not verify",
                )
            )
        return found

    @staticmethod
    def _tcb_failures(report: Report, verdict: VerifiedChain, *, turin: bool) -> list[Failure]:
        found = []
        certified = verdict.extensions.tcb(turin=turin)
        label = verdict.leaf_label
        if certified is None:
            found.append(
                Failure(
                    f"snp.{label}.tcb",
                    "blSPL, teeSPL, snpSPL, ucodeSPL" + (", fmcSPL" if turin else ""),
                    "missing in the certificate",
                )
            )
        else:
            if report.reported_tcb != certified:
                found.append(
                    Failure(
                        "snp.reported_tcb",
                        f"{certified} (from the {label.upper()})",
                        str(report.reported_tcb),
                    )
                )
            high = _tcb_not_above(certified, report.current_tcb)
            if high:
                found.append(
                    Failure(
                        "snp.current_tcb",
                        f"at least the certified {certified}",
                        str(report.current_tcb),
                        detail="below in: " + ", ".join(high),
                    )
                )
        high = _tcb_not_above(report.committed_tcb, report.current_tcb)
        if high:
            found.append(
                Failure(
                    "snp.committed_tcb",
                    f"at most CURRENT_TCB {report.current_tcb}",
                    str(report.committed_tcb),
                    detail="above in: " + ", ".join(high),
                )
            )
        return found

    @staticmethod
    def _chip_failures(
        report: Report, verdict: VerifiedChain, policy: Policy, product: str | None
    ) -> list[Failure]:
        if verdict.leaf_label != "vcek":
            return []
        hwid = verdict.extensions.hwid
        if hwid is None:
            return [Failure("snp.chip_id", "a hwID extension in the VCEK", "missing")]
        if report.chip_id_masked:
            if policy.allow_masked_chip_id:
                return []
            return [
                Failure(
                    "snp.chip_id",
                    f"CHIP_ID {hwid.hex()}",
                    "masked (all zero)",
                    detail="policy does not allow MASK_CHIP_ID",
                )
            ]
        if product == TURIN and len(hwid) == TURIN_HWID_SIZE:
            expected = hwid.ljust(HWID_SIZE, b"\x00")
        else:
            expected = hwid
        if report.chip_id != expected:
            return [Failure("snp.chip_id", f"hwID {hwid.hex()}", report.chip_id.hex())]
        return []


_DEFAULT = Verifier()


def default_verifier() -> Verifier:
    """The process-wide verifier ``verify`` uses (its memo only holds public certificates)."""
    return _DEFAULT


def verify_report(
    report: bytes | Report,
    signer_cert: bytes,
    chain: bytes | None = None,
    *,
    at: datetime | None = None,
    policy: Policy | None = None,
    product: str | None = None,
    roots: Roots | None = None,
    fetcher: KdsFetcher | None = None,
) -> VerifiedReport:
    """Like ``verify`` but also returns the product, signer and warn-only findings."""
    return _DEFAULT.verify_report(
        report,
        signer_cert,
        chain,
        at=at,
        policy=policy,
        product=product,
        roots=roots,
        fetcher=fetcher,
    )


def verify(
    report: bytes | Report,
    signer_cert: bytes,
    chain: bytes | None = None,
    *,
    at: datetime | None = None,
    policy: Policy | None = None,
    product: str | None = None,
    roots: Roots | None = None,
    fetcher: KdsFetcher | None = None,
) -> Report:
    """Verify an SEV-SNP report; return it parsed, or raise ``VerificationError`` (all failures).

    ``signer_cert`` is the VCEK or VLEK (PEM or DER); ``chain`` is PEM with the ASK/ASVK and
    optionally the ARK. Certificates are trusted only through ``roots`` pins (AMD's by
    default); a pinned ARK or ASK missing from ``chain`` may come from ``roots.certificates``
    or the ``fetcher``. ``at`` is the validity clock (default: now). Malformed input raises
    ``MalformedReportError`` or ``MalformedCertificateError`` instead.
    """
    return verify_report(
        report,
        signer_cert,
        chain,
        at=at,
        policy=policy,
        product=product,
        roots=roots,
        fetcher=fetcher,
    ).report
