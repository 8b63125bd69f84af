"""Every verifier check against the fake AMD signer: one accepting case, and for each check a
case where it must reject, naming the check."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from constellation.attestation import AttestationError, ValidationError, snp

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def verify(fake, evidence, **kwargs):
    kwargs.setdefault("roots", fake.roots())
    kwargs.setdefault("at", NOW)
    return snp.verify_report(evidence.report, evidence.signer, evidence.chain, **kwargs)


def rejected(fake, evidence, **kwargs) -> list[str]:
    with pytest.raises(snp.VerificationError) as info:
        verify(fake, evidence, **kwargs)
    assert all(str(f) in str(info.value) for f in info.value.failures)
    return [f.check for f in info.value.failures]


def test_valid_vcek_report_verifies(milan):
    result = verify(milan, milan.evidence())
    assert result.product == "Milan"
    assert result.signer == "vcek"
    assert result.report.chip_id == milan.chip_id
    assert result.warnings == ()
    assert (
        snp.verify(
            milan.evidence().report, milan.vcek, milan.chain_pem(), roots=milan.roots(), at=NOW
        ).version
        == 3
    )


def test_valid_vlek_report_verifies(milan):
    result = verify(milan, milan.evidence("vlek"))
    assert (result.product, result.signer) == ("Milan", "vlek")


def test_verification_error_is_a_typed_attestation_error(milan, fakeamd):
    ev = milan.evidence()
    ev.report = milan.report(key=ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(snp.VerificationError) as info:
        verify(milan, ev)
    assert isinstance(info.value, ValidationError)
    assert isinstance(info.value, AttestationError)
    assert info.value.to_dict()["failures"][0]["check"] == "snp.report.signature"


def test_bad_report_signature(milan):
    ev = milan.evidence()
    ev.report = milan.report(key=ec.generate_private_key(ec.SECP384R1()))
    assert rejected(milan, ev) == ["snp.report.signature"]


def test_signature_scalar_wider_than_p384_is_rejected(milan, fakeamd):
    raw = bytearray(milan.evidence().report)
    raw[0x2A0 + 60] = 1  # R now exceeds 48 bytes; the unsigned tail check stays quiet
    ev = milan.evidence()
    ev.report = bytes(raw)
    assert rejected(milan, ev) == ["snp.report.signature"]


def test_unsigned_signature_tail_must_be_zero(milan):
    raw = bytearray(milan.evidence().report)
    raw[0x4A0 - 1] = 1
    ev = milan.evidence()
    ev.report = bytes(raw)
    assert rejected(milan, ev) == ["snp.report.reserved"]


def test_bad_vcek_signature(milan):
    ev = milan.evidence()
    ev.signer = milan.issue_vcek(milan.vcek_key, issuer_key=rsa.generate_private_key(65537, 2048))
    assert rejected(milan, ev) == ["snp.vcek.signature"]


def test_bad_vlek_signature(milan):
    ev = milan.evidence("vlek")
    ev.signer = milan.issue_vlek(milan.vlek_key, issuer_key=milan.ask_key)
    assert rejected(milan, ev) == ["snp.vlek.signature"]


def test_bad_ask_signature(milan, fakeamd):
    forged_ask = milan.ca_cert(
        "SEV-Milan", milan.ask_key, rsa.generate_private_key(65537, 2048), "ARK-Milan"
    )
    pins = snp.ProductPins(
        ark=milan.pins().ark,
        ask=hashlib.sha256(forged_ask).digest(),
        asvk=milan.pins().asvk,
    )
    ev = milan.evidence()
    ev.chain = milan.chain_pem(ask=forged_ask)
    assert rejected(milan, ev, roots=snp.Roots.from_pins({"Milan": pins})) == ["snp.ask.signature"]


def test_bad_ark_signature(milan, fakeamd):
    forged_ark = milan.ca_cert(
        "ARK-Milan", milan.ark_key, rsa.generate_private_key(65537, 2048), "ARK-Milan"
    )
    pins = snp.ProductPins(
        ark=hashlib.sha256(forged_ark).digest(), ask=milan.pins().ask, asvk=milan.pins().asvk
    )
    ev = milan.evidence()
    ev.chain = fakeamd.pem(milan.ask) + fakeamd.pem(forged_ark)
    assert rejected(milan, ev, roots=snp.Roots.from_pins({"Milan": pins})) == ["snp.ark.signature"]


def test_unpinned_ark_is_refused_even_when_it_signs(milan, fakeamd):
    other = fakeamd.FakeAmd("Milan")
    ev = milan.evidence()
    ev.chain = fakeamd.pem(milan.ask) + fakeamd.pem(other.ark)
    assert rejected(milan, ev) == ["snp.chain.pinned", "snp.ark.missing"]


def test_unpinned_ask_is_refused(milan, fakeamd):
    other = fakeamd.FakeAmd("Milan")
    ev = other.evidence()
    checks = rejected(milan, ev)
    assert checks[:2] == ["snp.chain.pinned", "snp.chain.pinned"]
    assert "snp.ask.missing" in checks


def test_fake_evidence_is_refused_under_the_real_amd_pins(milan):
    """The memo is keyed by the roots too: success under fake pins does not leak."""
    verify(milan, milan.evidence())
    checks = rejected(milan, milan.evidence(), roots=snp.Roots.amd())
    assert "snp.chain.pinned" in checks
    assert "snp.ask.missing" in checks


def test_missing_chain(milan):
    ev = milan.evidence()
    ev.chain = b""
    assert rejected(milan, ev) == ["snp.ask.missing"]


def test_missing_ark_without_trust_directory(milan):
    ev = milan.evidence()
    ev.chain = milan.chain_pem(ark=False)
    assert rejected(milan, ev) == ["snp.ark.missing"]


def test_ark_from_trusted_certificates(milan):
    ev = milan.evidence()
    ev.chain = milan.chain_pem(ark=False)
    roots = milan.roots().with_certificates([milan.ark])
    assert verify(milan, ev, roots=roots).product == "Milan"


def test_chain_of_another_product(milan, genoa):
    ev = milan.evidence()
    ev.chain = genoa.chain_pem()
    checks = rejected(milan, ev, roots=milan.roots(genoa))
    assert checks == ["snp.ask.missing", "snp.chain.product", "snp.chain.product"]


@pytest.mark.parametrize(
    ("window", "detail"),
    [
        ({"not_after": datetime(2025, 6, 1, tzinfo=UTC)}, "expired"),
        ({"not_before": datetime(2027, 1, 1, tzinfo=UTC)}, "not yet valid"),
    ],
)
def test_vcek_validity(milan, window, detail):
    ev = milan.evidence()
    ev.signer = milan.issue_vcek(milan.vcek_key, **window)
    with pytest.raises(snp.VerificationError) as info:
        verify(milan, ev)
    (failure,) = info.value.failures
    assert (failure.check, failure.detail) == ("snp.vcek.validity", detail)


def test_clock_outside_every_window(milan):
    checks = rejected(milan, milan.evidence(), at=datetime(2040, 1, 1, tzinfo=UTC))
    assert checks == ["snp.vcek.validity", "snp.ask.validity", "snp.ark.validity"]


def test_naive_clock_is_taken_as_utc(milan):
    assert verify(milan, milan.evidence(), at=datetime(2026, 1, 1)).signer == "vcek"


def test_reported_tcb_differs_from_certificate(milan):
    higher = snp.TcbVersion.from_parts(bootloader=9, tee=0, snp=24, microcode=72)
    ev = milan.evidence(tcb=higher)
    assert rejected(milan, ev) == ["snp.reported_tcb"]


def test_certified_tcb_above_current(milan):
    lower = snp.TcbVersion.from_parts(bootloader=9, tee=0, snp=22, microcode=72)
    ev = milan.evidence(current_tcb=int(lower), committed_tcb=int(lower))
    assert rejected(milan, ev) == ["snp.current_tcb"]


def test_committed_above_current(milan):
    higher = snp.TcbVersion.from_parts(bootloader=9, tee=0, snp=23, microcode=73)
    ev = milan.evidence(committed_tcb=int(higher))
    with pytest.raises(snp.VerificationError) as info:
        verify(milan, ev)
    (failure,) = info.value.failures
    assert failure.check == "snp.committed_tcb"
    assert failure.detail == "above in: microcode"


def test_minimum_tcb(milan):
    minimum = snp.TcbVersion.from_parts(bootloader=9, tee=1, snp=23, microcode=72)
    with pytest.raises(snp.VerificationError) as info:
        verify(milan, milan.evidence(), policy=snp.Policy(minimum_tcb=minimum))
    (failure,) = info.value.failures
    assert (failure.check, failure.detail) == ("snp.minimum_tcb", "low: tee")
    at_minimum = snp.TcbVersion.from_parts(bootloader=9, tee=0, snp=23, microcode=72)
    verify(milan, milan.evidence(), policy=snp.Policy(minimum_tcb=at_minimum))


def test_minimum_launch_tcb(milan):
    old = snp.TcbVersion.from_parts(bootloader=3, tee=0, snp=8, microcode=115)
    ev = milan.evidence(launch_tcb=int(old))
    verify(milan, ev)  # no minimum: a launch at old firmware is fine
    policy = snp.Policy(
        minimum_launch_tcb=snp.TcbVersion.from_parts(bootloader=3, tee=0, snp=14, microcode=0)
    )
    assert rejected(milan, ev, policy=policy) == ["snp.minimum_launch_tcb"]


def test_vmpl(milan):
    ev = milan.evidence(vmpl=2)
    assert rejected(milan, ev) == ["snp.vmpl"]
    assert verify(milan, ev, policy=snp.Policy(vmpl=2)).report.vmpl == 2
    assert verify(milan, ev, policy=snp.Policy(vmpl=None)).report.vmpl == 2
    with pytest.raises(ValueError, match="VMPL"):
        snp.Policy(vmpl=4)


def test_debug_bit(milan):
    ev = milan.evidence(policy=0x30000 | (1 << 19))
    assert rejected(milan, ev) == ["snp.policy.debug"]
    assert verify(milan, ev, policy=snp.Policy(allow_debug=True)).report.guest_policy.debug


def test_migration_agent(milan):
    ev = milan.evidence(policy=0x30000 | (1 << 18), report_id_ma=bytes(32))
    assert rejected(milan, ev) == ["snp.policy.migrate_ma", "snp.migration_agent"]
    verify(milan, ev, policy=snp.Policy(allow_migration_agent=True))


def test_chip_id_must_equal_hwid(milan):
    ev = milan.evidence(chip_id=bytes([0x42]) * 64)
    assert rejected(milan, ev) == ["snp.chip_id"]


def test_masked_chip_id_needs_policy(milan):
    ev = milan.evidence(chip_id=bytes(64))
    assert rejected(milan, ev) == ["snp.chip_id"]
    verify(milan, ev, policy=snp.Policy(allow_masked_chip_id=True))


def test_report_data(milan):
    ev = milan.evidence(report_data=b"nonce".ljust(64, b"\0"))
    assert (
        verify(milan, ev, policy=snp.Policy(report_data=b"nonce")).report.report_data[:5]
        == b"nonce"
    )
    assert rejected(milan, ev, policy=snp.Policy(report_data=b"other")) == ["snp.report_data"]
    with pytest.raises(ValueError, match="at most 64"):
        snp.Policy(report_data=bytes(65))


def test_measurement_allow_list(milan):
    ev = milan.evidence()
    good = snp.AllowList.of([bytes([0x11]) * 48])
    verify(milan, ev, policy=snp.Policy(measurements=good))
    bad = snp.AllowList.of(["22" * 48])
    assert rejected(milan, ev, policy=snp.Policy(measurements=bad)) == ["snp.measurement"]
    warn = snp.AllowList.of(["22" * 48], enforce=False)
    result = verify(milan, ev, policy=snp.Policy(measurements=warn))
    assert [w.check for w in result.warnings] == ["snp.measurement"]
    assert not result.warnings[0].enforced


def test_host_data_and_id_key_allow_lists(milan):
    ev = milan.evidence(host_data=b"h" * 32, id_key_digest=b"k" * 48)
    policy = snp.Policy(
        host_data=snp.AllowList.of([b"h" * 32]), id_key_digests=snp.AllowList.of([b"k" * 48])
    )
    verify(milan, ev, policy=policy)
    policy = snp.Policy(
        host_data=snp.AllowList.of([b"x" * 32]), id_key_digests=snp.AllowList.of([])
    )
    assert rejected(milan, ev, policy=policy) == ["snp.host_data", "snp.id_key_digest"]


def test_guest_svn(milan):
    assert rejected(milan, milan.evidence(guest_svn=1), policy=snp.Policy(minimum_guest_svn=2)) == [
        "snp.guest_svn"
    ]


def test_vlek_report_with_vcek_signer(milan):
    ev = milan.evidence()
    ev.report = milan.report(key=milan.vcek_key, signer="vlek", chip_id=milan.chip_id)
    assert rejected(milan, ev) == ["snp.signer"]


def test_vcek_report_with_vlek_signer(milan):
    ev = milan.evidence("vlek")
    ev.report = milan.report(key=milan.vlek_key, signer="vcek", chip_id=bytes(64))
    assert rejected(milan, ev) == ["snp.signer"]


def test_vcek_extensions_under_the_asvk(milan, fakeamd):
    """A certificate with VCEK extensions issued by the ASVK is neither a VCEK nor a VLEK."""
    ev = milan.evidence("vlek")
    ev.signer = milan._leaf(
        "SEV-VLEK",
        milan.vlek_key,
        "SEV-VLEK-Milan",
        milan.asvk_key,
        {**milan.spl_extensions(milan.tcb), f"{snp.certs.AMD_OID_ARC}.4": milan.chip_id},
        fakeamd.NOT_BEFORE,
        fakeamd.NOT_AFTER,
    )
    assert rejected(milan, ev) == ["snp.vlek.kind"]


def test_signer_key_none(milan):
    ev = milan.evidence()
    ev.report = milan.report(key=milan.vcek_key, signer="none")
    assert rejected(milan, ev) == ["snp.signer"]


def test_signer_certificate_must_be_p384(milan):
    ev = milan.evidence()
    ev.signer = milan.issue_vcek(ec.generate_private_key(ec.SECP256R1()))
    assert rejected(milan, ev) == ["snp.vcek.key", "snp.report.signature"]


def test_certificate_without_tcb_extensions(milan, fakeamd):
    ev = milan.evidence()
    ev.signer = milan._leaf(
        "SEV-VCEK",
        milan.vcek_key,
        "SEV-Milan",
        milan.ask_key,
        {f"{snp.certs.AMD_OID_ARC}.4": milan.chip_id},
        fakeamd.NOT_BEFORE,
        fakeamd.NOT_AFTER,
    )
    assert rejected(milan, ev) == ["snp.vcek.tcb"]


def test_undecodable_extension(milan):
    ev = milan.evidence()
    ev.signer = milan.issue_vcek(
        milan.vcek_key, extra={f"{snp.certs.AMD_OID_ARC}.3.1": b"\x04\x01\x09"}
    )
    assert rejected(milan, ev) == ["snp.vcek.extensions", "snp.vcek.tcb"]


def test_report_shape_checks(milan, fakeamd):
    ev = milan.evidence(version=9, signature_algo=2, platform_info=1, chip_id=milan.chip_id)
    raw = bytearray(ev.report)
    raw[0x4C] = 1  # reserved, signed: re-sign so only the shape checks fail
    ev.report = fakeamd.sign_report(raw, milan.vcek_key)
    checks = rejected(milan, ev)
    assert checks == ["snp.report.version", "snp.report.signature_algo"]
    ev = milan.evidence()
    raw = bytearray(ev.report)
    raw[0x4C] = 1
    ev.report = fakeamd.sign_report(raw, milan.vcek_key)
    assert rejected(milan, ev) == ["snp.report.reserved"]


def test_product_must_agree(milan):
    ev = milan.evidence()
    assert rejected(milan, ev, product="Genoa") == ["snp.product", "snp.product"]
    ev = milan.evidence(cpuid_family=0x19, cpuid_model=0x11)  # CPUID says Genoa
    assert rejected(milan, ev) == ["snp.product"]
    ev = milan.evidence()
    ev.signer = milan.issue_vcek(milan.vcek_key, product_name="Genoa-B1")
    assert rejected(milan, ev) == ["snp.vcek.product"]
    assert rejected(milan, milan.evidence(), product="Bergamo") == ["snp.product"]


def test_product_from_certificate_for_version_2_reports(milan):
    ev = milan.evidence(version=2, cpuid_family=0, cpuid_model=0, cpuid_stepping=0)
    result = verify(milan, ev)
    assert result.product == "Milan"
    assert result.report.cpuid_family is None


def test_turin_layout_and_hwid(turin):
    result = verify(turin, turin.evidence())
    assert result.product == "Turin"
    tcb = result.report.reported_tcb
    assert (tcb.fmc, tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode) == (2, 1, 1, 3, 74)
    minimum = snp.TcbVersion.from_parts(fmc=3, bootloader=1, tee=1, snp=3, microcode=74)
    assert rejected(turin, turin.evidence(), policy=snp.Policy(minimum_tcb=minimum)) == [
        "snp.minimum_tcb"
    ]
    ev = turin.evidence(chip_id=turin.chip_id[:8] + b"\x01" + bytes(55))
    assert rejected(turin, ev) == ["snp.chip_id"]


def test_turin_certificate_tcb_is_compared_in_turin_layout(turin):
    other = snp.TcbVersion.from_parts(fmc=1, bootloader=1, tee=1, snp=3, microcode=74)
    ev = turin.evidence()
    ev.signer = turin.issue_vcek(turin.vcek_key, tcb=other)
    assert rejected(turin, ev) == ["snp.reported_tcb"]


def test_genoa(genoa):
    assert verify(genoa, genoa.evidence()).product == "Genoa"
    assert verify(genoa, genoa.evidence("vlek")).signer == "vlek"


def test_every_failure_is_listed(milan):
    minimum = snp.TcbVersion.from_parts(bootloader=10, tee=0, snp=23, microcode=72)
    ev = milan.evidence(
        vmpl=1,
        policy=0x30000 | (1 << 19),
        chip_id=bytes([7]) * 64,
        committed_tcb=int(snp.TcbVersion.from_parts(bootloader=9, tee=0, snp=23, microcode=99)),
    )
    ev.report = milan.report(
        key=ec.generate_private_key(ec.SECP384R1()),
        vmpl=1,
        policy=0x30000 | (1 << 19),
        chip_id=bytes([7]) * 64,
        committed_tcb=int(snp.TcbVersion.from_parts(bootloader=9, tee=0, snp=23, microcode=99)),
    )
    policy = snp.Policy(
        minimum_tcb=minimum,
        measurements=snp.AllowList.of(["00" * 48]),
        report_data=b"expected",
    )
    checks = rejected(milan, ev, policy=policy, at=datetime(2040, 1, 1, tzinfo=UTC))
    assert checks == [
        "snp.vcek.validity",
        "snp.ask.validity",
        "snp.ark.validity",
        "snp.report.signature",
        "snp.committed_tcb",
        "snp.chip_id",
        "snp.minimum_tcb",
        "snp.vmpl",
        "snp.policy.debug",
        "snp.report_data",
        "snp.measurement",
    ]


def test_truncated_and_garbage_reports(milan):
    ev = milan.evidence()
    with pytest.raises(snp.MalformedReportError, match="1184 bytes, got 1183"):
        snp.verify(ev.report[:-1], ev.signer, ev.chain, roots=milan.roots(), at=NOW)
    with pytest.raises(snp.MalformedReportError):
        snp.verify(b"", ev.signer, ev.chain, roots=milan.roots(), at=NOW)
    garbage = bytes(range(256)) * 5
    checks = rejected(milan, type(ev)(garbage, ev.signer, ev.chain, ev.key))
    assert "snp.report.signature" in checks
    assert "snp.report.version" in checks


def test_garbage_certificates(milan):
    ev = milan.evidence()
    with pytest.raises(snp.MalformedCertificateError):
        snp.verify(ev.report, b"not a certificate", ev.chain, roots=milan.roots(), at=NOW)
    with pytest.raises(snp.MalformedCertificateError):
        snp.verify(
            ev.report,
            ev.signer,
            b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
            roots=milan.roots(),
            at=NOW,
        )
    with pytest.raises(snp.MalformedCertificateError):
        snp.verify(ev.report, ev.signer + ev.signer, ev.chain, roots=milan.roots(), at=NOW)


def test_composed_checks(milan):
    ev = milan.evidence(report_data=b"a".ljust(64, b"\0"))
    want_a = snp.Policy(report_data=b"a", vmpl=None)
    want_b = snp.Policy(report_data=b"b", vmpl=None)
    verify(milan, ev, policy=snp.Policy(checks=(snp.AnyOf((want_b, want_a)),)))
    assert rejected(milan, ev, policy=snp.Policy(checks=(snp.AllOf((want_a, want_b)),))) == [
        "snp.report_data"
    ]
    assert rejected(milan, ev, policy=snp.Policy(checks=(snp.AnyOf((want_b, want_b)),))) == [
        "snp.report_data",
        "snp.report_data",
    ]


def test_pem_and_der_signer_and_reuse_of_parsed_report(milan, fakeamd):
    ev = milan.evidence()
    parsed = snp.parse_report(ev.report)
    assert (
        snp.verify(parsed, fakeamd.pem(ev.signer), ev.chain, roots=milan.roots(), at=NOW) == parsed
    )


def test_verifier_memo_is_bounded(milan):
    verifier = snp.Verifier(milan.roots(), cache_size=1)
    ev = milan.evidence()
    verifier.verify_report(ev.report, ev.signer, ev.chain, at=NOW)
    vlek = milan.evidence("vlek")
    verifier.verify_report(vlek.report, vlek.signer, vlek.chain, at=NOW)
    assert len(verifier._cache) == 1
