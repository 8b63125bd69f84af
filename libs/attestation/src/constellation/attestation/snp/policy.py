"""What a verified SEV-SNP report must additionally satisfy: the verifier's policy.

A check is any object with ``check(report) -> list[Failure]`` (``ReportCheck``). ``Policy`` is
the standard one (minimum TCBs, VMPL, debug and migration-agent rules, report data and
allow-lists); ``AllOf`` and ``AnyOf`` compose checks, and ``Policy.checks`` appends any others
(the variant bindings in ``bindings.py`` are checks too). Failures with ``enforced=False`` are
warnings: they travel in the verdict but never reject.

Checks here see only the parsed report. Facts that need the certificate (signature, TCB in the
V[CL]EK, CHIP_ID = hwID) are checked by the verifier itself; ``Policy`` only configures them
(``allow_masked_chip_id``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from constellation.attestation.errors import Failure
from constellation.attestation.snp.report import NO_MIGRATION_AGENT, Report
from constellation.attestation.snp.tcb import TcbVersion

REPORT_DATA_SIZE = 64
MAX_VMPL = 3


@runtime_checkable
class ReportCheck(Protocol):
    """One composable requirement on a report."""

    def check(self, report: Report) -> list[Failure]:
        """Every way ``report`` falls short (warn-only ones with ``enforced=False``)."""
        ...


@dataclass(frozen=True)
class AllOf:
    """All checks must pass; failures of every one are reported."""

    checks: tuple[ReportCheck, ...]

    def check(self, report: Report) -> list[Failure]:
        return [failure for item in self.checks for failure in item.check(report)]


@dataclass(frozen=True)
class AnyOf:
    """At least one check must pass (no enforced failure); otherwise all failures are listed."""

    checks: tuple[ReportCheck, ...]

    def check(self, report: Report) -> list[Failure]:
        collected: list[Failure] = []
        for item in self.checks:
            found = item.check(report)
            if not any(f.enforced for f in found):
                return found
            collected.extend(found)
        return collected


@dataclass(frozen=True)
class AllowList:
    """Acceptable values of one report field; ``enforce=False`` only warns on a mismatch."""

    values: frozenset[bytes]
    enforce: bool = True

    @classmethod
    def of(cls, values: Iterable[bytes | str], *, enforce: bool = True) -> AllowList:
        """Build from bytes or hex strings."""
        return cls(
            frozenset(bytes.fromhex(v) if isinstance(v, str) else bytes(v) for v in values),
            enforce,
        )

    def failures(self, check: str, actual: bytes) -> list[Failure]:
        if actual in self.values:
            return []
        expected = (
            "one of " + ", ".join(sorted(v.hex() for v in self.values))
            if self.values
            else "an allowed value (the list is empty)"
        )
        return [Failure(check, expected, actual.hex(), enforced=self.enforce)]


def _expected_report_data(value: bytes) -> bytes:
    if len(value) > REPORT_DATA_SIZE:
        raise ValueError(f"report data is at most {REPORT_DATA_SIZE} bytes, got {len(value)}")
    return value.ljust(REPORT_DATA_SIZE, b"\x00")


@dataclass(frozen=True)
class Policy:
    """The standard SEV-SNP policy. Defaults are the strict ones.

    ``minimum_tcb`` applies to REPORTED_TCB: that is the TCB whose key signed the report (the
    verifier demands it equal the V[CL]EK's and not exceed CURRENT_TCB), so a host cannot
    satisfy the minimum with a current TCB while signing with an older key.
    ``report_data`` shorter than 64 bytes is compared zero-padded (how SNP guests place a
    32-byte value). ``vmpl=None`` accepts any VMPL.
    """

    minimum_tcb: TcbVersion | None = None
    minimum_launch_tcb: TcbVersion | None = None
    measurements: AllowList | None = None
    host_data: AllowList | None = None
    id_key_digests: AllowList | None = None
    vmpl: int | None = 0
    allow_debug: bool = False
    allow_migration_agent: bool = False
    allow_masked_chip_id: bool = False
    report_data: bytes | None = None
    minimum_guest_svn: int = 0
    checks: tuple[ReportCheck, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.vmpl is not None and not 0 <= self.vmpl <= MAX_VMPL:
            raise ValueError(f"VMPL is 0..{MAX_VMPL}, got {self.vmpl}")
        if self.report_data is not None:
            _expected_report_data(self.report_data)

    def check(self, report: Report) -> list[Failure]:
        found: list[Failure] = []
        for name, minimum, actual in (
            ("snp.minimum_tcb", self.minimum_tcb, report.reported_tcb),
            ("snp.minimum_launch_tcb", self.minimum_launch_tcb, report.launch_tcb),
        ):
            if minimum is None:
                continue
            low = actual.below(minimum)
            if low:
                found.append(
                    Failure(
                        name, f"at least {minimum}", str(actual), detail="low: " + ", ".join(low)
                    )
                )
        if self.vmpl is not None and report.vmpl != self.vmpl:
            found.append(Failure("snp.vmpl", str(self.vmpl), str(report.vmpl)))
        policy = report.guest_policy
        if policy.debug and not self.allow_debug:
            found.append(
                Failure("snp.policy.debug", "DEBUG policy bit clear", f"policy {report.policy:#x}")
            )
        if not self.allow_migration_agent:
            if policy.migrate_ma:
                found.append(
                    Failure(
                        "snp.policy.migrate_ma",
                        "MIGRATE_MA policy bit clear",
                        f"policy {report.policy:#x}",
                    )
                )
            if report.report_id_ma != NO_MIGRATION_AGENT:
                found.append(
                    Failure(
                        "snp.migration_agent",
                        "no migration agent (REPORT_ID_MA all ones)",
                        report.report_id_ma.hex(),
                    )
                )
        if report.guest_svn < self.minimum_guest_svn:
            found.append(
                Failure(
                    "snp.guest_svn", f"at least {self.minimum_guest_svn}", str(report.guest_svn)
                )
            )
        if self.report_data is not None:
            expected = _expected_report_data(self.report_data)
            if report.report_data != expected:
                found.append(Failure("snp.report_data", expected.hex(), report.report_data.hex()))
        for name, allowed, actual_bytes in (
            ("snp.measurement", self.measurements, report.measurement),
            ("snp.host_data", self.host_data, report.host_data),
            ("snp.id_key_digest", self.id_key_digests, report.id_key_digest),
        ):
            if allowed is not None:
                found.extend(allowed.failures(name, actual_bytes))
        for extra in self.checks:
            found.extend(extra.check(report))
        return found
