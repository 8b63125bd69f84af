"""Attestation variants: name -> (OID, issuer factory, validator factory).

The OID names a variant on the wire (e.g. in an aTLS certificate extension), the name in
configuration. A variant whose issuer or validator is not implemented in this package yet is
still registered with its name and OID, so configuration naming it is recognized; asking it
for the missing part raises ``VariantUnavailableError`` instead of failing later, with the
variant's ``unavailable`` note saying why.

The SEV-SNP variants have validators (``snpvtpm``: keyword arguments ``policy``, ``roots``,
``fetcher``, ``clock``, ``product`` go to ``SnpVtpmValidator``) but no issuer: issuing needs
SEV-SNP hardware.

Every validator refuses a quote whose attestation key (AK) is not rooted; what roots it
differs per variant. The ``qemu-vtpm`` validator takes ``platform_roots`` (the platform CA
certificates, ``identity.verify.load_platform_roots``) and optionally ``trusted_ak_keys``;
with neither it refuses every document (``ak.root``).

| variant         | OID            | the AK is rooted by                                      |
|-----------------|----------------|----------------------------------------------------------|
| qemu-vtpm       | 1.3.9900.5.1   | an AK certificate chaining to a configured platform root |
|                 |                | (names the instance and role: ``VerifiedEvidence.identity``) |
| azure-sev-snp   | 1.3.9900.4.1   | the SNP report (VCEK), via the HCL runtime data's AK     |
| aws-sev-snp     | 1.3.9900.2.2   | the SNP report (VLEK), REPORT_DATA = SHA-512(AK SPKI)    |
| gcp-sev-snp     | 1.3.9900.3.2   | nothing yet: the report binds the extra data, not the AK |
|                 |                | (GCP's AK certificate is not checked; pin the AK)        |
| azure-tdx       | 1.3.9900.4.3   | (not implemented)                                        |
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from constellation.attestation.errors import AttestationError
from constellation.attestation.evidence import Issuer, Validator
from constellation.attestation.snpvtpm import (
    AWS_SEV_SNP,
    AZURE_SEV_SNP,
    GCP_SEV_SNP,
    ISSUER_UNAVAILABLE,
    aws_validator,
    azure_validator,
    gcp_validator,
)
from constellation.attestation.vtpm import QEMU_VTPM, VtpmIssuer, VtpmValidator

IssuerFactory = Callable[..., Issuer]
ValidatorFactory = Callable[..., Validator]


class VariantError(AttestationError):
    """Root of the registry's errors."""


class UnknownVariantError(VariantError):
    """No variant of that name or OID is registered."""


class VariantUnavailableError(VariantError):
    """The variant is known, but its issuer or validator is not available in this build."""


@dataclass(frozen=True)
class Variant:
    """One attestation variant; ``issuer``/``validator`` forward arguments to the factories."""

    name: str
    oid: str
    issuer_factory: IssuerFactory | None = None
    validator_factory: ValidatorFactory | None = None
    unavailable: str = ""

    def _missing(self, part: str) -> VariantUnavailableError:
        reason = f": {self.unavailable}" if self.unavailable else ""
        return VariantUnavailableError(f"variant {self.name!r} has no {part} in this build{reason}")

    def issuer(self, *args: Any, **kwargs: Any) -> Issuer:
        if self.issuer_factory is None:
            raise self._missing("issuer")
        return self.issuer_factory(*args, **kwargs)

    def validator(self, *args: Any, **kwargs: Any) -> Validator:
        if self.validator_factory is None:
            raise self._missing("validator")
        return self.validator_factory(*args, **kwargs)


class VariantRegistry:
    """A thread-safe table of variants, looked up by name or by OID."""

    def __init__(self, variants: Iterable[Variant] = ()) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, Variant] = {}
        for variant in variants:
            self.add(variant)

    def add(self, variant: Variant) -> None:
        """Add a new variant; its name and OID must both be unused."""
        with self._lock:
            if variant.name in self._by_name:
                raise VariantError(f"variant {variant.name!r} is already registered")
            if any(v.oid == variant.oid for v in self._by_name.values()):
                raise VariantError(f"OID {variant.oid} is already registered")
            self._by_name[variant.name] = variant

    def register(
        self,
        name: str,
        *,
        issuer_factory: IssuerFactory | None = None,
        validator_factory: ValidatorFactory | None = None,
    ) -> Variant:
        """Attach factories to a known variant (name and OID stay fixed)."""
        with self._lock:
            current = self._lookup(name)
            updated = replace(
                current,
                issuer_factory=issuer_factory or current.issuer_factory,
                validator_factory=validator_factory or current.validator_factory,
            )
            self._by_name[name] = updated
            return updated

    def _lookup(self, name: str) -> Variant:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name))
            raise UnknownVariantError(
                f"unknown attestation variant {name!r} (known: {known})"
            ) from None

    def get(self, name: str) -> Variant:
        with self._lock:
            return self._lookup(name)

    def by_oid(self, oid: str) -> Variant:
        with self._lock:
            for variant in self._by_name.values():
                if variant.oid == oid:
                    return variant
        raise UnknownVariantError(f"no attestation variant has OID {oid}")

    def names(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(sorted(self._by_name))


def _default_variants() -> list[Variant]:
    return [
        Variant(QEMU_VTPM, "1.3.9900.5.1", VtpmIssuer, VtpmValidator),
        Variant(AZURE_SEV_SNP, "1.3.9900.4.1", None, azure_validator, ISSUER_UNAVAILABLE),
        Variant(AWS_SEV_SNP, "1.3.9900.2.2", None, aws_validator, ISSUER_UNAVAILABLE),
        Variant(GCP_SEV_SNP, "1.3.9900.3.2", None, gcp_validator, ISSUER_UNAVAILABLE),
        Variant("azure-tdx", "1.3.9900.4.3"),
    ]


DEFAULT_REGISTRY = VariantRegistry(_default_variants())


def get_variant(name: str) -> Variant:
    """The variant called ``name`` in the default registry, or ``UnknownVariantError``."""
    return DEFAULT_REGISTRY.get(name)


def variant_for_oid(oid: str) -> Variant:
    """The variant with ``oid`` in the default registry, or ``UnknownVariantError``."""
    return DEFAULT_REGISTRY.by_oid(oid)
