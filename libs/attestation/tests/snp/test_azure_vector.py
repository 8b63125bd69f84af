"""The real Azure SEV-SNP evidence (``../shared/vectors/azure-sev-snp``): every field the
vector's README states, verification at a pinned clock, and rejection of every tampering."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from constellation.attestation import snp

INSIDE_VALIDITY = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def vector(azure_dir):
    return {
        "report": (azure_dir / "attestation.bin").read_bytes(),
        "vcek_pem": (azure_dir / "vcek.pem").read_bytes(),
        "vcek_der": (azure_dir / "vcek.cert").read_bytes(),
        "chain": (azure_dir / "certchain.pem").read_bytes(),
        "runtime": (azure_dir / "runtimedata.bin").read_bytes(),
    }


def test_fields_match_the_readme(vector):
    report = snp.parse_report(vector["report"])
    assert len(vector["report"]) == 1204  # 20 trailing IGVM header bytes are ignored
    assert report.version == 2
    assert report.guest_svn == 2
    assert report.policy == 0x3001F
    assert not report.guest_policy.debug
    assert report.guest_policy.smt
    assert report.vmpl == 0
    assert report.signature_algo == 1
    tcb = 0x5D06000000000002
    for value in (report.current_tcb, report.reported_tcb, report.committed_tcb, report.launch_tcb):
        assert value == tcb
        assert (value.bootloader, value.tee, value.snp, value.microcode) == (2, 0, 6, 93)
        assert value.fmc is None
    assert report.platform_info == 0x1
    assert report.signer == "vcek"
    assert report.report_data == bytes.fromhex(
        "0ccc0895ef2f2c3b8c8568f5a2bb65ff5bf9387a09359742ad41e686cacfd38b"
    ) + bytes(32)
    assert report.measurement.hex() == (
        "5677f1de87289e7ad2c7e99c805d0468b1a9ccd83f0d245afa5242d405da4d57"
        "25852f8c6550564870e5f3206dfb1841"
    )
    assert report.id_key_digest.hex() == (
        "57e229e0ffe5fa92d0faddff6cae0e61c926fc9ef9afd20a8b8cfcf7129db933"
        "8cbe5bf3f6987733a2bf65d06dc38fc1"
    )
    assert (
        report.report_id.hex() == "05f7240b24a1babe2ece844c4f792bcd9844bf6907d14aeea00156310b9538da"
    )
    assert report.chip_id.hex() == (
        "9e44aaef02cfca6fddbaca669c6cfd29e1ab8d97ebc939857128acbb13b8740d"
        "f31436d34e86e5f8ae0cdfeb3a0e185db46decac176cc77d761c22a1b9dcf25b"
    )
    assert (report.current_major, report.current_minor, report.current_build) == (1, 51, 1)
    assert report.current_firmware == "1.51 build 1"
    assert report.cpuid_family is None  # version 2: no CPUID fields
    assert report.reserved_violations() == []
    assert hashlib.sha256(vector["runtime"]).digest() == report.report_data[:32]


def test_vcek_extensions_match_the_readme(vector):
    cert = snp.load_certificate(vector["vcek_der"])
    assert snp.load_certificate(vector["vcek_pem"]).fingerprint == cert.fingerprint
    extensions, problems = snp.certs.amd_extensions(cert.cert)
    assert problems == []
    assert extensions.product_name == "Milan-B0"
    assert dict(extensions.spl) == {"bootloader": 2, "tee": 0, "snp": 6, "microcode": 93}
    assert extensions.hwid == snp.parse_report(vector["report"]).chip_id
    assert extensions.kind == "vcek"
    assert cert.cert.not_valid_before_utc == datetime(2023, 8, 30, 12, 15, 24, tzinfo=UTC)
    assert cert.cert.not_valid_after_utc == datetime(2030, 8, 30, 12, 15, 24, tzinfo=UTC)


@pytest.mark.parametrize("signer", ["vcek_pem", "vcek_der"])
def test_real_evidence_verifies(vector, signer):
    result = snp.verify_report(
        vector["report"], vector[signer], vector["chain"], at=INSIDE_VALIDITY
    )
    assert (result.product, result.signer) == ("Milan", "vcek")
    assert snp.verify(
        vector["report"], vector[signer], vector["chain"], at=INSIDE_VALIDITY
    ).report_id == (result.report.report_id)


def test_real_evidence_with_policy_and_explicit_product(vector):
    report = snp.parse_report(vector["report"])
    policy = snp.Policy(
        minimum_tcb=snp.TcbVersion.from_parts(bootloader=2, tee=0, snp=6, microcode=93),
        minimum_launch_tcb=snp.TcbVersion.from_parts(bootloader=2, tee=0, snp=6, microcode=93),
        measurements=snp.AllowList.of([report.measurement]),
        id_key_digests=snp.AllowList.of([report.id_key_digest]),
        report_data=report.report_data,
    )
    snp.verify(
        vector["report"],
        vector["vcek_pem"],
        vector["chain"],
        at=INSIDE_VALIDITY,
        policy=policy,
        product="milan",
    )


def test_every_signed_byte_is_covered(vector):
    """Flip each bit-0 of bytes 0x000..0x29F: every variant must be refused."""
    accepted = []
    unsigned_failure = []
    verifier = snp.Verifier()
    for position in range(0x2A0):
        raw = bytearray(vector["report"])
        raw[position] ^= 0x01
        try:
            verifier.verify_report(
                bytes(raw), vector["vcek_der"], vector["chain"], at=INSIDE_VALIDITY
            )
        except snp.VerificationError as err:
            if "snp.report.signature" not in [f.check for f in err.failures]:
                unsigned_failure.append(position)
        else:
            accepted.append(position)
    assert unsigned_failure == []
    assert accepted == []


def test_signature_bytes_are_covered(vector):
    for position in (
        0x2A0,
        0x2A0 + 47,
        0x2A0 + 72,
        0x2A0 + 72 + 47,
        0x2A0 + 48,
        0x2A0 + 144,
        0x49F,
    ):
        raw = bytearray(vector["report"])
        raw[position] ^= 0x80
        with pytest.raises(snp.VerificationError):
            snp.verify(bytes(raw), vector["vcek_der"], vector["chain"], at=INSIDE_VALIDITY)


def test_clock_outside_vcek_validity(vector):
    for at, detail in (
        (datetime(2031, 1, 1, tzinfo=UTC), "expired"),
        (datetime(2023, 1, 1, tzinfo=UTC), "not yet valid"),
    ):
        with pytest.raises(snp.VerificationError) as info:
            snp.verify(vector["report"], vector["vcek_der"], vector["chain"], at=at)
        assert [(f.check, f.detail) for f in info.value.failures] == [("snp.vcek.validity", detail)]


def pem_blocks(data: bytes) -> list[bytes]:
    end = b"-----END CERTIFICATE-----"
    return [block.strip() + b"\n" + end + b"\n" for block in data.split(end) if block.strip()]


def test_genoa_ask_substituted(vector, amd_roots_dir):
    genoa_ask, _ = pem_blocks((amd_roots_dir / "ask_ark_genoa.pem").read_bytes())
    _, milan_ark = pem_blocks(vector["chain"])
    with pytest.raises(snp.VerificationError) as info:
        snp.verify(vector["report"], vector["vcek_der"], genoa_ask + milan_ark, at=INSIDE_VALIDITY)
    checks = [f.check for f in info.value.failures]
    assert checks == ["snp.ask.missing", "snp.chain.product"]


def test_milan_vlek_asvk_substituted(vector, amd_roots_dir):
    chain = (amd_roots_dir / "ask_ark_milan_vlek.pem").read_bytes()
    with pytest.raises(snp.VerificationError) as info:
        snp.verify(vector["report"], vector["vcek_der"], chain, at=INSIDE_VALIDITY)
    assert [f.check for f in info.value.failures] == ["snp.ask.missing"]


def test_unpinned_ark_substituted(vector, fakeamd):
    milan_ask, _ = pem_blocks(vector["chain"])
    stranger = fakeamd.FakeAmd("Milan")
    with pytest.raises(snp.VerificationError) as info:
        snp.verify(
            vector["report"],
            vector["vcek_der"],
            milan_ask + fakeamd.pem(stranger.ark),
            at=INSIDE_VALIDITY,
        )
    assert [f.check for f in info.value.failures] == ["snp.chain.pinned", "snp.ark.missing"]


def test_ark_from_trust_directory(vector, tmp_path, amd_roots_dir):
    milan_ask, milan_ark = pem_blocks(vector["chain"])
    (tmp_path / "ark_milan.pem").write_bytes(milan_ark)
    roots = snp.load_trust_directory(tmp_path)
    snp.verify(vector["report"], vector["vcek_der"], milan_ask, at=INSIDE_VALIDITY, roots=roots)
    with pytest.raises(snp.VerificationError) as info:
        snp.verify(vector["report"], vector["vcek_der"], milan_ask, at=INSIDE_VALIDITY)
    assert [f.check for f in info.value.failures] == ["snp.ark.missing"]


def test_trust_directory_refuses_unpinned_certificates(tmp_path, fakeamd):
    stranger = fakeamd.FakeAmd("Milan")
    (tmp_path / "ark.pem").write_bytes(fakeamd.pem(stranger.ark))
    with pytest.raises(snp.TrustStoreError, match="not a pinned AMD certificate"):
        snp.load_trust_directory(tmp_path)


def test_tampered_vcek_is_refused(vector):
    der = bytearray(vector["vcek_der"])
    index = der.index(bytes.fromhex("9e44aaef"))  # inside the hwID extension
    der[index] ^= 1
    with pytest.raises(snp.VerificationError) as info:
        snp.verify(vector["report"], bytes(der), vector["chain"], at=INSIDE_VALIDITY)
    assert [f.check for f in info.value.failures] == ["snp.vcek.signature", "snp.chip_id"]


def test_real_evidence_under_fake_pins_is_refused(vector, milan):
    with pytest.raises(snp.VerificationError) as info:
        snp.verify(
            vector["report"],
            vector["vcek_der"],
            vector["chain"],
            at=INSIDE_VALIDITY,
            roots=milan.roots(),
        )
    assert "snp.chain.pinned" in [f.check for f in info.value.failures]
