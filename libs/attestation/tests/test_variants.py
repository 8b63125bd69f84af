"""The variant registry: names, OIDs, factories and typed errors."""

from __future__ import annotations

import os

import pytest

from constellation.attestation.errors import AttestationError, ValidationError
from constellation.attestation.eventlog import encode_event_log
from constellation.attestation.evidence import Validator
from constellation.attestation.identity import Role
from constellation.attestation.measurements import Measurements
from constellation.attestation.swtpm import Swtpm
from constellation.attestation.testing.platform import cached_platform_ca, provision_node
from constellation.attestation.variants import (
    DEFAULT_REGISTRY,
    UnknownVariantError,
    Variant,
    VariantError,
    VariantRegistry,
    VariantUnavailableError,
    get_variant,
    variant_for_oid,
)
from constellation.attestation.vtpm import VtpmValidator

EXPECTED = {
    "qemu-vtpm": "1.3.9900.5.1",
    "azure-sev-snp": "1.3.9900.4.1",
    "aws-sev-snp": "1.3.9900.2.2",
    "gcp-sev-snp": "1.3.9900.3.2",
    "azure-tdx": "1.3.9900.4.3",
}


def test_names_and_oids() -> None:
    assert set(EXPECTED) <= set(DEFAULT_REGISTRY.names())
    for name, oid in EXPECTED.items():
        assert get_variant(name).oid == oid
        assert variant_for_oid(oid).name == name


def test_unknown_names_and_oids_are_typed_errors() -> None:
    with pytest.raises(UnknownVariantError, match="unknown attestation variant 'nope'"):
        get_variant("nope")
    with pytest.raises(UnknownVariantError):
        variant_for_oid("1.2.3")
    assert issubclass(UnknownVariantError, AttestationError)


def test_qemu_vtpm_validator_factory() -> None:
    validator = get_variant("qemu-vtpm").validator(Measurements())
    assert isinstance(validator, VtpmValidator)
    assert isinstance(validator, Validator)
    assert validator.variant == "qemu-vtpm"


@pytest.mark.swtpm
def test_qemu_vtpm_issuer_factory(swtpm: Swtpm) -> None:
    variant = get_variant("qemu-vtpm")
    ca = cached_platform_ca()
    certificate = provision_node(swtpm.tcti, ca, "worker-0", Role.WORKER)
    nonce = os.urandom(32)
    document = variant.issuer(
        swtpm.tcti, ak_certificate=certificate, event_log=encode_event_log([])
    ).issue(b"user", nonce)
    rooted = variant.validator(Measurements(), platform_roots=[ca.certificate])
    assert rooted.validate(document, nonce) == b"user"
    # The factory's validator without platform roots fails closed.
    with pytest.raises(ValidationError) as rejected:
        variant.validator(Measurements()).validate(document, nonce)
    assert [f.check for f in rejected.value.failures] == ["ak.root"]


def test_missing_parts_are_unavailable_not_crashes() -> None:
    registry = VariantRegistry([Variant("azure-tdx", "1.3.9900.4.3")])
    with pytest.raises(VariantUnavailableError, match="no issuer"):
        registry.get("azure-tdx").issuer()
    with pytest.raises(VariantUnavailableError, match="no validator"):
        registry.get("azure-tdx").validator(Measurements())


def test_register_attaches_factories_to_known_variants_only() -> None:
    registry = VariantRegistry([Variant("gcp-sev-snp", "1.3.9900.3.2")])
    registry.register("gcp-sev-snp", validator_factory=VtpmValidator)
    assert isinstance(registry.get("gcp-sev-snp").validator(Measurements()), VtpmValidator)
    assert registry.get("gcp-sev-snp").oid == "1.3.9900.3.2"
    with pytest.raises(UnknownVariantError):
        registry.register("other", validator_factory=VtpmValidator)


def test_duplicate_names_and_oids_are_refused() -> None:
    registry = VariantRegistry([Variant("a", "1.1")])
    with pytest.raises(VariantError, match="already registered"):
        registry.add(Variant("a", "1.2"))
    with pytest.raises(VariantError, match=r"OID 1\.1"):
        registry.add(Variant("b", "1.1"))
