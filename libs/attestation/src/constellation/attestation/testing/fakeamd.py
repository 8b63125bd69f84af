"""A fake AMD SEV-SNP hierarchy that really signs, and a fake KDS that really serves HTTP.

``FakeAmd`` mints an ARK, ASK and ASVK (RSA-2048 with AMD's RSA-PSS/SHA-384/salt-48
parameters; real ones are RSA-4096, the verifier does not hard-code the size), V[CL]EKs
(ECDSA P-384, serial number 0 and AMD's extensions, like real ones) and SEV-SNP reports signed
with them. Its ``roots()`` pins the fake certificates the way ``Roots.amd()`` pins AMD's.

``FakeKds`` is an HTTP server on 127.0.0.1 with KDS's paths, able to answer 429 with
``Retry-After`` on demand; ``KdsClient`` is tested against it unchanged.

It lives in ``testing`` (not beside the SNP tests) because the fuzz targets build their seeds
and verifiers from it too. Nothing here is used by the product.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from constellation.attestation.snp import ProductPins, Roots, TcbVersion
from constellation.attestation.snp import certs as amdcerts
from constellation.attestation.snp.kds import chain_path, vcek_path
from constellation.attestation.snp.report import FIELDS, REPORT_SIZE, SIGNED_SIZE

PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
NOT_BEFORE = datetime(2024, 1, 1, tzinfo=UTC)
NOT_AFTER = datetime(2034, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT_TCB = TcbVersion.from_parts(bootloader=9, tee=0, snp=23, microcode=72)
DEFAULT_TURIN_TCB = TcbVersion.from_parts(bootloader=1, tee=1, snp=3, microcode=74, fmc=2)
CPUID = {"Milan": (0x19, 0x01, 1), "Genoa": (0x19, 0x11, 1), "Turin": (0x1A, 0x02, 0)}
PRODUCT_NAMES = {"Milan": "Milan-B0", "Genoa": "Genoa-B1", "Turin": "Turin-C0"}


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Advanced Micro Devices"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _der_len(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(content)) + content


def der_integer(value: int) -> bytes:
    return _der(0x02, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big"))


def der_ia5(text: str) -> bytes:
    return _der(0x16, text.encode("ascii"))


def with_zero_serial(cert: x509.Certificate, issuer_key: rsa.RSAPrivateKey) -> bytes:
    """Re-sign ``cert`` (issued with serial 1) as serial 0, which ``cryptography`` cannot build."""
    der = cert.public_bytes(serialization.Encoding.DER)
    tbs, start, length = amdcerts._tbs_and_serial(der)
    assert length == 1
    assert der[start] == 1
    tbs_offset = der.index(tbs)
    patched_tbs = bytearray(tbs)
    patched_tbs[start - tbs_offset] = 0
    sig_alg = der[tbs_offset + len(tbs) : len(der) - len(_der(0x03, b"\x00" + cert.signature))]
    signature = issuer_key.sign(bytes(patched_tbs), PSS, hashes.SHA384())
    return _der(0x30, bytes(patched_tbs) + sig_alg + _der(0x03, b"\x00" + signature))


def sign_report(body: bytearray, key: ec.EllipticCurvePrivateKey) -> bytes:
    r, s = decode_dss_signature(key.sign(bytes(body[:SIGNED_SIZE]), ec.ECDSA(hashes.SHA384())))
    body[0x2A0 : 0x2A0 + 72] = r.to_bytes(72, "little")
    body[0x2A0 + 72 : 0x2A0 + 144] = s.to_bytes(72, "little")
    return bytes(body)


def put(body: bytearray, name: str, value: int | bytes) -> None:
    offset, size = FIELDS[name]
    raw = value.to_bytes(size, "little") if isinstance(value, int) else value
    assert len(raw) == size, f"{name} is {size} bytes, got {len(raw)}"
    body[offset : offset + size] = raw


@dataclass
class Evidence:
    """What a guest hands a verifier: report, signer certificate, chain."""

    report: bytes
    signer: bytes
    chain: bytes
    key: ec.EllipticCurvePrivateKey = field(repr=False)


class FakeAmd:
    """One product line's fake AMD hierarchy."""

    def __init__(self, product: str = "Milan", *, rsa_bits: int = 2048) -> None:
        self.product = product
        self.turin = product == "Turin"
        self.tcb = DEFAULT_TURIN_TCB if self.turin else DEFAULT_TCB
        self.ark_key = rsa.generate_private_key(65537, rsa_bits)
        self.ask_key = rsa.generate_private_key(65537, rsa_bits)
        self.asvk_key = rsa.generate_private_key(65537, rsa_bits)
        self.ark = self.ca_cert(f"ARK-{product}", self.ark_key, self.ark_key, f"ARK-{product}")
        self.ask = self.ca_cert(f"SEV-{product}", self.ask_key, self.ark_key, f"ARK-{product}")
        self.asvk = self.ca_cert(
            f"SEV-VLEK-{product}", self.asvk_key, self.ark_key, f"ARK-{product}"
        )
        self.chip_id = hashlib.sha512(f"fake chip {product}".encode()).digest()
        if self.turin:
            self.chip_id = self.chip_id[:8] + bytes(56)
        self.vcek_key = ec.generate_private_key(ec.SECP384R1())
        self.vlek_key = ec.generate_private_key(ec.SECP384R1())
        self.vcek = self.issue_vcek(self.vcek_key)
        self.vlek = self.issue_vlek(self.vlek_key)

    # --- certificates -------------------------------------------------------------------
    def ca_cert(
        self,
        subject: str,
        key: rsa.RSAPrivateKey,
        issuer_key: rsa.RSAPrivateKey,
        issuer: str,
        *,
        not_before: datetime = NOT_BEFORE,
        not_after: datetime = NOT_AFTER,
    ) -> bytes:
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(subject))
            .issuer_name(_name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA384(), rsa_padding=PSS)
        )
        return cert.public_bytes(serialization.Encoding.DER)

    def _leaf(
        self,
        subject: str,
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
        issuer: str,
        issuer_key: rsa.RSAPrivateKey,
        extensions: dict[str, bytes],
        not_before: datetime,
        not_after: datetime,
    ) -> bytes:
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(subject))
            .issuer_name(_name(issuer))
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(not_before)
            .not_valid_after(not_after)
        )
        for oid, value in extensions.items():
            builder = builder.add_extension(
                x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False
            )
        cert = builder.sign(issuer_key, hashes.SHA384(), rsa_padding=PSS)
        return with_zero_serial(cert, issuer_key)

    def spl_extensions(self, tcb: TcbVersion) -> dict[str, bytes]:
        arc = amdcerts.AMD_OID_ARC
        ext = {
            f"{arc}.1": der_integer(1),
            f"{arc}.3.1": der_integer(tcb.bootloader),
            f"{arc}.3.2": der_integer(tcb.tee),
            f"{arc}.3.3": der_integer(tcb.snp),
            f"{arc}.3.8": der_integer(tcb.microcode),
        }
        if tcb.fmc is not None:
            ext[f"{arc}.3.9"] = der_integer(tcb.fmc)
        return ext

    def issue_vcek(
        self,
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
        *,
        tcb: TcbVersion | None = None,
        chip_id: bytes | None = None,
        product_name: str | None = None,
        issuer_key: rsa.RSAPrivateKey | None = None,
        not_before: datetime = NOT_BEFORE,
        not_after: datetime = NOT_AFTER,
        extra: dict[str, bytes] | None = None,
    ) -> bytes:
        """A DER VCEK; ``issuer_key`` other than the ASK's forges a bad signature."""
        chip = self.chip_id if chip_id is None else chip_id
        ext = self.spl_extensions(tcb or self.tcb)
        ext[f"{amdcerts.AMD_OID_ARC}.2"] = der_ia5(product_name or PRODUCT_NAMES[self.product])
        ext[f"{amdcerts.AMD_OID_ARC}.4"] = chip[:8] if self.turin else chip
        ext.update(extra or {})
        return self._leaf(
            "SEV-VCEK",
            key,
            f"SEV-{self.product}",
            issuer_key or self.ask_key,
            ext,
            not_before,
            not_after,
        )

    def issue_vlek(
        self,
        key: ec.EllipticCurvePrivateKey,
        *,
        tcb: TcbVersion | None = None,
        issuer_key: rsa.RSAPrivateKey | None = None,
        not_before: datetime = NOT_BEFORE,
        not_after: datetime = NOT_AFTER,
    ) -> bytes:
        ext = self.spl_extensions(tcb or self.tcb)
        ext[f"{amdcerts.AMD_OID_ARC}.2"] = der_ia5(PRODUCT_NAMES[self.product])
        ext[f"{amdcerts.AMD_OID_ARC}.5"] = der_ia5("fake-csp")
        return self._leaf(
            "SEV-VLEK",
            key,
            f"SEV-VLEK-{self.product}",
            issuer_key or self.asvk_key,
            ext,
            not_before,
            not_after,
        )

    def pins(self) -> ProductPins:
        return ProductPins(
            ark=hashlib.sha256(self.ark).digest(),
            ask=hashlib.sha256(self.ask).digest(),
            asvk=hashlib.sha256(self.asvk).digest(),
        )

    def roots(self, *others: FakeAmd) -> Roots:
        pins = {self.product: self.pins()}
        pins.update({other.product: other.pins() for other in others})
        return Roots.from_pins(pins)

    def chain_pem(
        self, signer: str = "vcek", *, ark: bool = True, ask: bytes | None = None
    ) -> bytes:
        middle = ask if ask is not None else (self.ask if signer == "vcek" else self.asvk)
        parts = [middle, self.ark] if ark else [middle]
        return b"".join(pem(part) for part in parts)

    # --- reports ------------------------------------------------------------------------
    def report(self, key: ec.EllipticCurvePrivateKey | None = None, **fields: Any) -> bytes:
        """A signed report; keyword arguments override fields by ``FIELDS`` name.

        ``signer="vlek"`` sets SIGNING_KEY (and the default key) to the VLEK's.
        """
        signer = fields.pop("signer", "vcek")
        tcb = int(fields.pop("tcb", self.tcb))
        family, model, stepping = CPUID[self.product]
        values: dict[str, int | bytes] = {
            "version": 3,
            "guest_svn": 1,
            "policy": 0x30000,
            "vmpl": 0,
            "signature_algo": 1,
            "current_tcb": tcb,
            "reported_tcb": tcb,
            "committed_tcb": tcb,
            "launch_tcb": tcb,
            "platform_info": 1,
            "signer_info": {"vcek": 0, "vlek": 1, "none": 7}[signer] << 2,
            "report_data": bytes(64),
            "measurement": bytes([0x11]) * 48,
            "report_id": bytes([0x22]) * 32,
            "report_id_ma": b"\xff" * 32,
            "cpuid_family": family,
            "cpuid_model": model,
            "cpuid_stepping": stepping,
            "chip_id": bytes(64) if signer == "vlek" else self.chip_id,
            "current_major": 1,
            "current_minor": 55,
            "current_build": 21,
            "committed_major": 1,
            "committed_minor": 55,
            "committed_build": 21,
        }
        values.update(fields)
        body = bytearray(REPORT_SIZE)
        for name, value in values.items():
            put(body, name, value)
        default_key = self.vcek_key if signer != "vlek" else self.vlek_key
        return sign_report(body, key or default_key)

    def evidence(self, signer: str = "vcek", **fields: Any) -> Evidence:
        if signer == "vlek":
            return Evidence(
                self.report(signer="vlek", **fields),
                self.vlek,
                self.chain_pem("vlek"),
                self.vlek_key,
            )
        return Evidence(self.report(**fields), self.vcek, self.chain_pem(), self.vcek_key)


def pem(der: bytes) -> bytes:
    text = base64.b64encode(der)
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"


# --- fake KDS -------------------------------------------------------------------------------
class FakeKds:
    """KDS paths served over HTTP on 127.0.0.1 from fake hierarchies.

    ``script`` holds (status, headers) answers to give before serving normally, e.g.
    ``[(429, {"Retry-After": "2"})]``; ``requests`` records every path asked for.
    """

    def __init__(self, *fakes: FakeAmd) -> None:
        self.documents: dict[str, bytes] = {}
        for fake in fakes:
            self.documents[chain_path(fake.product, "vcek")] = fake.chain_pem("vcek")
            self.documents[chain_path(fake.product, "vlek")] = fake.chain_pem("vlek")
            self.documents[vcek_path(fake.product, fake.chip_id, fake.tcb)] = fake.vcek
        self.script: deque[tuple[int, dict[str, str]]] = deque()
        self.requests: list[str] = []
        kds = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                kds.requests.append(self.path)
                if kds.script:
                    status, headers = kds.script.popleft()
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = kds.documents.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeKds:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


__all__ = ["NOW", "Evidence", "FakeAmd", "FakeKds", "pem", "put", "sign_report"]
