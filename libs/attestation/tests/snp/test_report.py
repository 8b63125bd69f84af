"""Report layout and parsing: lengths, versions, CPUID, Turin TCB layout."""

from __future__ import annotations

import itertools

import pytest

from constellation.attestation import MalformedEvidenceError, snp
from constellation.attestation.snp import report as layout


def test_layout_is_consistent():
    assert layout.REPORT_SIZE == 1184
    assert layout.SIGNED_SIZE == 0x2A0
    for name, (offset, size) in layout.FIELDS.items():
        assert offset + size <= layout.REPORT_SIZE, name
    signed = sorted((o, o + s, n) for n, (o, s) in layout.FIELDS.items() if o < layout.SIGNED_SIZE)
    for (_, end, name), (start, _, following) in itertools.pairwise(signed):
        assert end <= start, f"{name} overlaps {following}"


@pytest.mark.parametrize("size", [0, 1, 100, 0x2A0, 1183])
def test_short_input_is_refused(size):
    with pytest.raises(snp.MalformedReportError, match=f"got {size}"):
        snp.parse_report(bytes(size))


def test_malformed_report_is_malformed_evidence():
    assert issubclass(snp.MalformedReportError, MalformedEvidenceError)
    with pytest.raises(snp.MalformedReportError):
        snp.parse_report("not bytes")  # type: ignore[arg-type]


def test_trailing_bytes_are_ignored(milan):
    raw = milan.report()
    assert snp.parse_report(raw + b"trailer") == snp.parse_report(raw)


def test_v3_cpuid_and_firmware(milan, genoa, turin):
    report = snp.parse_report(milan.report())
    assert (report.cpuid_family, report.cpuid_model, report.cpuid_stepping) == (0x19, 0x01, 1)
    assert report.product == "Milan"
    assert snp.parse_report(genoa.report()).product == "Genoa"
    assert snp.parse_report(turin.report()).product == "Turin"
    assert report.current_firmware == "1.55 build 21"
    assert report.committed_firmware == "1.55 build 21"
    assert report.launch_mit_vector is None


def test_v5_mitigation_vectors(milan):
    report = snp.parse_report(milan.report(version=5, launch_mit_vector=3, current_mit_vector=7))
    assert (report.launch_mit_vector, report.current_mit_vector) == (3, 7)
    assert report.reserved_violations() == []
    assert snp.parse_report(milan.report(version=3, launch_mit_vector=3)).reserved_violations() == [
        "0x1f8-0x29f"
    ]


def test_turin_tcb_layout(turin):
    report = snp.parse_report(turin.report())
    assert report.reported_tcb.turin
    assert report.reported_tcb.fmc == 2
    forced = snp.parse_report(turin.report(), product="Milan")
    assert not forced.reported_tcb.turin
    assert forced.reported_tcb.fmc is None


def test_unknown_cpuid_has_no_product(milan):
    assert snp.parse_report(milan.report(cpuid_family=0x17, cpuid_model=0x31)).product is None


def test_signer_and_policy_bits(milan):
    report = snp.parse_report(milan.report(signer_info=(3 << 2) | 1, policy=0x1D0000))
    assert report.signer == "reserved(3)"
    assert report.author_key_en
    policy = report.guest_policy
    assert (policy.debug, policy.migrate_ma, policy.single_socket, policy.smt) == (
        True,
        True,
        True,
        True,
    )


def test_to_dict_renders_public_fields(milan):
    rendered = snp.parse_report(milan.report()).to_dict()
    assert rendered["chip_id"] == milan.chip_id.hex()
    assert rendered["reported_tcb"]["snp"] == 23
    assert rendered["product"] == "Milan"
