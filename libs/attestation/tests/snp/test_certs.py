"""AMD certificate handling: the six published chains against the pins, the serial-0 path,
decoding errors."""

from __future__ import annotations

import warnings

import pytest
from cryptography import x509

from constellation.attestation import snp
from constellation.attestation.snp import certs

CHAINS = {
    "ask_ark_milan.pem": ("Milan", "ask"),
    "ask_ark_milan_vlek.pem": ("Milan", "asvk"),
    "ask_ark_genoa.pem": ("Genoa", "ask"),
    "ask_ark_genoa_vlek.pem": ("Genoa", "asvk"),
    "ask_ark_turin_vcek.pem": ("Turin", "ask"),
    "ask_ark_turin_vlek.pem": ("Turin", "asvk"),
}


@pytest.mark.parametrize(("name", "expected"), sorted(CHAINS.items()))
def test_published_chain_matches_pins(amd_roots_dir, name, expected):
    product, role = expected
    intermediate, ark = snp.load_certificates((amd_roots_dir / name).read_bytes())
    roots = snp.Roots.amd()
    assert roots.identify(intermediate.fingerprint) == (product, role)
    assert roots.identify(ark.fingerprint) == (product, "ark")
    assert certs.check_pss_signature(intermediate, ark) is None
    assert certs.check_pss_signature(ark, ark) is None
    # and not by another product's ARK
    other = next(p for p in snp.PRODUCTS if p != product)
    other_file = next(f for f, (p, _) in CHAINS.items() if p == other)
    _, other_ark = snp.load_certificates((amd_roots_dir / other_file).read_bytes())
    assert certs.check_pss_signature(intermediate, other_ark) is not None


def test_pins_are_distinct():
    fingerprints = [
        getattr(pins, role) for pins in snp.AMD_PINS.values() for role in ("ark", "ask", "asvk")
    ]
    assert len(set(fingerprints)) == 9
    assert all(len(fp) == 32 for fp in fingerprints)


def test_serial_zero_loads_without_warnings(azure_dir):
    der = (azure_dir / "vcek.cert").read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cert = snp.load_certificate(der)
    assert cert.tbs == cert.cert.tbs_certificate_bytes


def test_serial_patch_path_keeps_original_bytes(azure_dir):
    """The fallback for a ``cryptography`` that refuses serial 0 parses the real VCEK the same
    way and keeps the original TBS, so the ASK signature still verifies."""
    der = (azure_dir / "vcek.cert").read_bytes()
    patched = certs._load_with_positive_serial(der)
    assert patched.serial_number == 1
    normal = snp.load_certificate(der)
    assert patched.subject == normal.cert.subject
    assert certs.amd_extensions(patched) == certs.amd_extensions(normal.cert)
    assert patched.tbs_certificate_bytes != normal.tbs
    tbs, _, _ = certs._tbs_and_serial(der)
    substitute = certs.AmdCertificate(
        cert=patched, der=der, tbs=tbs, fingerprint=normal.fingerprint
    )
    ask, _ = snp.load_certificates((azure_dir / "certchain.pem").read_bytes())
    assert certs.check_pss_signature(substitute, ask) is None


def test_serial_patch_path_is_used_when_the_library_refuses(azure_dir, monkeypatch):
    der = (azure_dir / "vcek.cert").read_bytes()
    real_loader = x509.load_der_x509_certificate

    def strict_loader(data: bytes) -> x509.Certificate:
        if data == der:
            raise ValueError("serial number must be positive")
        return real_loader(data)

    monkeypatch.setattr(certs.x509, "load_der_x509_certificate", strict_loader)
    loaded = snp.load_certificate(der)
    assert loaded.der == der
    assert loaded.tbs != loaded.cert.tbs_certificate_bytes  # parsed from the patched copy
    ask, _ = snp.load_certificates((azure_dir / "certchain.pem").read_bytes())
    assert certs.check_pss_signature(loaded, ask) is None


def test_serial_patch_only_touches_zero_serials(milan):
    with pytest.raises(ValueError, match="zero serial"):
        certs._load_with_positive_serial(milan.ask)


def test_fake_vceks_have_serial_zero_like_real_ones(milan):
    assert certs._tbs_and_serial(milan.vcek)[1:] == (certs._tbs_and_serial(milan.vcek)[1], 1)
    _, start, _ = certs._tbs_and_serial(milan.vcek)
    assert milan.vcek[start] == 0


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x30",
        b"\x30\x82\xff\xff",
        b"garbage",
        b"\x30\x03\x02\x01\x00",
        b"-----BEGIN CERTIFICATE-----\n-----END",
    ],
)
def test_malformed_certificates(data):
    with pytest.raises(snp.MalformedCertificateError):
        snp.load_certificates(data)


def test_one_certificate_expected(milan, fakeamd):
    with pytest.raises(snp.MalformedCertificateError, match="expected one certificate, found 2"):
        snp.load_certificate(milan.chain_pem())
    assert len(snp.load_certificates(milan.chain_pem())) == 2
    assert snp.load_certificate(fakeamd.pem(milan.vcek)).der == milan.vcek


def test_extension_values_are_checked(milan):
    arc = certs.AMD_OID_ARC
    cert = snp.load_certificate(
        milan.issue_vcek(
            milan.vcek_key,
            extra={
                f"{arc}.3.3": bytes.fromhex("02020100"),
                f"{arc}.2": b"\x0c\x03abc",
                f"{arc}.4": b"short",
            },
        )
    )
    extensions, problems = certs.amd_extensions(cert.cert)
    assert len(problems) == 3
    assert "snp" not in extensions.spl
    assert extensions.product_name is None
    assert extensions.hwid is None


# -- certificates that parse but break a lazy read (fuzz findings, issue 14) ------------------
# ``cryptography`` decodes most fields only when they are read; each of these certificates
# loads, and an attacker-chosen field raised an untyped exception from deep inside the verifier.


def _der_oid(dotted: str) -> bytes:
    """The DER encoding of an OBJECT IDENTIFIER (short form only; enough for these arcs)."""
    first, second, *rest = (int(part) for part in dotted.split("."))
    body = bytes([40 * first + second])
    for arc in rest:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return bytes([0x06, len(body)]) + body


def _patched(der: bytes, old: bytes, new: bytes, *, last: bool = False) -> bytes:
    """``der`` with one occurrence of ``old`` (same length as ``new``) replaced."""
    assert len(old) == len(new)
    at = der.rfind(old) if last else der.find(old)
    assert at >= 0
    return der[:at] + new + der[at + len(old) :]


def _first_byte_flipped(der: bytes, text: bytes, *, last: bool) -> bytes:
    return _patched(der, text, b"\xff" + text[1:], last=last)


LAZY_BREAKS = {
    # what the certificate carries -> the untyped exception it used to raise
    "version 6 (InvalidVersion)": lambda der: _patched(
        der, bytes.fromhex("a003020102"), bytes.fromhex("a003020105")
    ),
    "duplicate extension (DuplicateExtension)": lambda der: _patched(
        der, _der_oid(f"{certs.AMD_OID_ARC}.3.2"), _der_oid(f"{certs.AMD_OID_ARC}.3.1")
    ),
    "unknown curve (UnsupportedAlgorithm)": lambda der: _patched(
        der, _der_oid("1.3.132.0.34"), _der_oid("1.3.132.0.99")
    ),
    "malformed issuer name (ValueError)": lambda der: _first_byte_flipped(
        der, b"Advanced Micro Devices", last=False
    ),
    "malformed subject name (ValueError)": lambda der: _first_byte_flipped(
        der, b"Advanced Micro Devices", last=True
    ),
}


@pytest.mark.parametrize("name", sorted(LAZY_BREAKS))
def test_lazily_broken_signer_certificate_is_malformed(milan, name):
    der = LAZY_BREAKS[name](milan.vcek)
    with pytest.raises(snp.MalformedCertificateError, match="cannot be read"):
        snp.load_certificate(der)
    ev = milan.evidence()
    with pytest.raises(snp.MalformedCertificateError):
        snp.verify(ev.report, der, ev.chain, roots=milan.roots(), at=milan_now())


@pytest.mark.parametrize("name", [n for n in sorted(LAZY_BREAKS) if "name" in n or "version" in n])
def test_lazily_broken_chain_certificate_is_malformed(milan, fakeamd, name):
    broken_ask = LAZY_BREAKS[name](milan.ask)
    ev = milan.evidence()
    chain = fakeamd.pem(broken_ask) + fakeamd.pem(milan.ark)
    with pytest.raises(snp.MalformedCertificateError):
        snp.verify(ev.report, ev.signer, chain, roots=milan.roots(), at=milan_now())


def test_signer_key_not_on_its_curve_is_malformed(milan):
    x = milan.vcek_key.public_key().public_numbers().x.to_bytes(48, "big")
    der = _patched(milan.vcek, x, bytes([x[0] ^ 1]) + x[1:])
    with pytest.raises(snp.MalformedCertificateError, match="cannot be read"):
        snp.load_certificate(der)


def milan_now():
    from constellation.attestation.testing.fakeamd import NOW

    return NOW
