"""AMD's SEV-SNP certificate hierarchy: decoding, AMD extensions, pins and chain checks.

The hierarchy per product line is ``ARK`` (self-signed root) -> ``ASK`` -> ``VCEK`` for
chip-bound keys and ``ARK`` -> ``ASVK`` -> ``VLEK`` for keys a cloud provider loads. Every
signature in it is RSASSA-PSS with SHA-384, MGF1-SHA-384 and a 48-byte salt; the V[CL]EK key is
ECDSA P-384. Trust comes from pins, not from whoever supplied a certificate: the SHA-256
fingerprints of AMD's ARK, ASK and ASVK per product are embedded here (DESIGN.md §4.4), and a
supplied chain is accepted only when its certificates match them. ``Roots`` lets tests inject
fake pins; production code uses ``Roots.amd()``.

V[CL]EK certificates carry serial number 0, which RFC 5280 forbids and ``cryptography``
deprecates (a warning now, an exception "in a future release"). ``load_certificate`` handles
this deliberately: it silences exactly that deprecation warning while parsing and, should the
library refuse the certificate outright, re-parses a copy whose serial byte is set to 1 while
keeping the original DER, TBS bytes and fingerprint, so signatures are checked over exactly
what AMD signed. The serial number is never read. (``warnings.catch_warnings`` is process-wide;
the filter only hides that one deprecation for the duration of a parse, and parsed
certificates are memoized by the verifier, so this happens once per certificate.)

``cryptography`` decodes most of a certificate only when a field is read, so a certificate that
loads can still raise from ``.extensions`` (a duplicate extension), ``.public_key()`` (an unknown
curve, a point off its curve), ``.subject`` (a malformed name) or ``.version``. ``_load_der``
reads every field the verifier will read once, up front, and turns whatever that raises into a
``MalformedCertificateError``; an ``AmdCertificate`` therefore never raises later.

Chain checks depend only on the certificates, so ``verify_chain`` returns a time-independent
``VerifiedChain`` (cacheable by certificate hashes); validity windows are checked per call
against the caller's clock with ``VerifiedChain.validity_failures``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import SignatureAlgorithmOID

from constellation.attestation.errors import Failure
from constellation.attestation.snp.errors import MalformedCertificateError
from constellation.attestation.snp.products import GENOA, MILAN, TURIN, product_from_name
from constellation.attestation.snp.tcb import TcbVersion
from constellation.attestation.x509errors import X509_DECODE_ERRORS

# --- AMD certificate extensions (arc 1.3.6.1.4.1.3704.1) ----------------------------------
AMD_OID_ARC = "1.3.6.1.4.1.3704.1"
OID_STRUCT_VERSION = x509.ObjectIdentifier(f"{AMD_OID_ARC}.1")
OID_PRODUCT_NAME = x509.ObjectIdentifier(f"{AMD_OID_ARC}.2")
OID_BL_SPL = x509.ObjectIdentifier(f"{AMD_OID_ARC}.3.1")
OID_TEE_SPL = x509.ObjectIdentifier(f"{AMD_OID_ARC}.3.2")
OID_SNP_SPL = x509.ObjectIdentifier(f"{AMD_OID_ARC}.3.3")
OID_UCODE_SPL = x509.ObjectIdentifier(f"{AMD_OID_ARC}.3.8")
OID_FMC_SPL = x509.ObjectIdentifier(f"{AMD_OID_ARC}.3.9")
OID_HWID = x509.ObjectIdentifier(f"{AMD_OID_ARC}.4")
OID_CSP_ID = x509.ObjectIdentifier(f"{AMD_OID_ARC}.5")

SPL_OIDS: dict[str, x509.ObjectIdentifier] = {
    "bootloader": OID_BL_SPL,
    "tee": OID_TEE_SPL,
    "snp": OID_SNP_SPL,
    "microcode": OID_UCODE_SPL,
    "fmc": OID_FMC_SPL,
}
HWID_SIZE = 64
TURIN_HWID_SIZE = 8  # Turin VCEKs are keyed by the first 8 bytes of CHIP_ID

# --- Signature parameters fixed by AMD ------------------------------------------------------
PSS_SALT_LENGTH = 48
AMD_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=PSS_SALT_LENGTH)
MIN_RSA_BITS = 2048  # AMD uses 4096; tests use 2048 to stay fast

# --- Pinned AMD keys (SHA-256 of the certificate DER), DESIGN.md §4.4 -----------------------
ROLE_ARK = "ark"
ROLE_ASK = "ask"
ROLE_ASVK = "asvk"
SIGNER_FOR_ROLE = {ROLE_ASK: "vcek", ROLE_ASVK: "vlek"}
ROLE_FOR_SIGNER = {signer: role for role, signer in SIGNER_FOR_ROLE.items()}


@dataclass(frozen=True)
class ProductPins:
    """SHA-256 fingerprints of one product line's ARK, ASK (VCEK) and ASVK (VLEK)."""

    ark: bytes
    ask: bytes
    asvk: bytes

    def role_of(self, fingerprint: bytes) -> str | None:
        for role in (ROLE_ARK, ROLE_ASK, ROLE_ASVK):
            if getattr(self, role) == fingerprint:
                return role
        return None


AMD_PINS: Mapping[str, ProductPins] = {
    MILAN: ProductPins(
        ark=bytes.fromhex("69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd"),
        ask=bytes.fromhex("67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b"),
        asvk=bytes.fromhex("c5e081f59b7efab1fe2f8b505e159704e72f29cab7ef7cf628a05a42439082f5"),
    ),
    GENOA: ProductPins(
        ark=bytes.fromhex("4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1"),
        ask=bytes.fromhex("5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521"),
        asvk=bytes.fromhex("197e610743a917d6b9bb982a5a9226ccc0a15b611be0619e626aca9151457372"),
    ),
    TURIN: ProductPins(
        ark=bytes.fromhex("1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a"),
        ask=bytes.fromhex("5b77ef5fe7a7a004fd9032668fba9d0fda22f88c4442069a479636a6ae3b3185"),
        asvk=bytes.fromhex("104e10a8bd060a3c20a434261a57d0588fd65a88915b4f65b08bdecaf8df1a3c"),
    ),
}


# --- Certificate decoding -------------------------------------------------------------------
_PEM_BLOCK = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s*(.*?)\s*-----END CERTIFICATE-----", re.DOTALL
)
_SERIAL_DEPRECATION = r".*serial number.*"
_DER_SEQUENCE = 0x30
_DER_INTEGER = 0x02
_DER_IA5STRING = 0x16
_DER_VERSION_TAG = 0xA0


@dataclass(frozen=True)
class AmdCertificate:
    """A decoded certificate with the exact bytes it came from.

    ``tbs`` is taken from ``der`` (not re-encoded), so signatures are checked over the bytes
    the issuer signed even when ``cert`` had to be parsed from a serial-patched copy.
    """

    cert: x509.Certificate = field(repr=False, compare=False)
    der: bytes = field(repr=False)
    tbs: bytes = field(repr=False, compare=False)
    fingerprint: bytes

    @property
    def subject(self) -> str:
        return self.cert.subject.rfc4514_string()

    def describe(self) -> str:
        return f"{self.subject or '<no subject>'} (sha256:{self.fingerprint.hex()})"


def _der_header(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content offset, content length) of the DER element at ``pos``; bounds-checked."""
    if pos + 2 > len(data):
        raise ValueError("DER element header runs past the end")
    tag, first = data[pos], data[pos + 1]
    if first < 0x80:
        start, length = pos + 2, first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + 2 + count > len(data):
            raise ValueError("unsupported DER length encoding")
        start = pos + 2 + count
        length = int.from_bytes(data[pos + 2 : start], "big")
    if start + length > len(data):
        raise ValueError("DER element runs past the end")
    return tag, start, length


def _tbs_and_serial(der: bytes) -> tuple[bytes, int, int]:
    """The TBSCertificate bytes and the (offset, length) of the serial INTEGER's content."""
    tag, outer, _ = _der_header(der, 0)
    if tag != _DER_SEQUENCE:
        raise ValueError("a certificate is a DER SEQUENCE")
    tag, tbs_start, tbs_len = _der_header(der, outer)
    if tag != _DER_SEQUENCE:
        raise ValueError("a TBSCertificate is a DER SEQUENCE")
    tbs = der[outer : tbs_start + tbs_len]
    pos = tbs_start
    tag, start, length = _der_header(der, pos)
    if tag == _DER_VERSION_TAG:
        pos = start + length
        tag, start, length = _der_header(der, pos)
    if tag != _DER_INTEGER:
        raise ValueError("certificate serial number is not an INTEGER")
    return tbs, start, length


def _load_with_positive_serial(der: bytes) -> x509.Certificate:
    """Parse a serial-0 certificate by handing ``cryptography`` a copy with serial 1.

    Only the one serial byte changes (same length, so no other offset moves); the copy is used
    for field access only, never for signature checks.
    """
    _, start, length = _tbs_and_serial(der)
    if length != 1 or der[start] != 0:
        raise ValueError("only a zero serial number can be patched")
    patched = der[:start] + b"\x01" + der[start + 1 :]
    return x509.load_der_x509_certificate(patched)


def _load_der(der: bytes) -> AmdCertificate:
    try:
        tbs, _, _ = _tbs_and_serial(der)
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=_SERIAL_DEPRECATION, category=CryptographyDeprecationWarning
            )
            try:
                cert = x509.load_der_x509_certificate(der)
            except ValueError:
                cert = _load_with_positive_serial(der)
    except ValueError as err:
        raise MalformedCertificateError(f"not a DER X.509 certificate: {err}") from None
    except X509_DECODE_ERRORS as err:  # e.g. InvalidVersion, raised while loading
        raise _unreadable(err) from None
    _read_every_field(cert)
    return AmdCertificate(cert=cert, der=der, tbs=tbs, fingerprint=hashlib.sha256(der).digest())


def _read_every_field(cert: x509.Certificate) -> None:
    """Decode every field the verifier reads, so that a bad one is refused here, typed.

    The signature hash is read only for RSASSA-PSS (AMD's algorithm): a certificate with another
    algorithm is a chain failure (``check_pss_signature``), not a malformed certificate.
    """
    try:
        _ = cert.version, cert.signature, cert.not_valid_before_utc, cert.not_valid_after_utc
        cert.subject.rfc4514_string()
        cert.issuer.rfc4514_string()
        for extension in cert.extensions:
            _ = extension.value
        cert.public_key()
        if cert.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS:
            _ = cert.signature_hash_algorithm
    except X509_DECODE_ERRORS as err:
        raise _unreadable(err) from None


def _unreadable(err: Exception) -> MalformedCertificateError:
    return MalformedCertificateError(
        f"X.509 certificate cannot be read: {type(err).__name__}: {err}; "
        "supply the genuine certificate (from the guest or AMD KDS)"
    )


def _pem_blocks(data: bytes) -> list[bytes]:
    blocks = []
    for match in _PEM_BLOCK.finditer(data):
        try:
            blocks.append(base64.b64decode(b"".join(match.group(1).split()), validate=True))
        except (binascii.Error, ValueError):
            raise MalformedCertificateError("a PEM certificate block is not valid base64") from None
    return blocks


def load_certificates(data: bytes) -> list[AmdCertificate]:
    """Every certificate in ``data``: PEM blocks in order, or one DER certificate."""
    if not isinstance(data, bytes | bytearray):
        raise MalformedCertificateError(f"certificates are bytes, got {type(data).__name__}")
    data = bytes(data)
    if b"-----BEGIN" in data:
        blocks = _pem_blocks(data)
        if not blocks:
            raise MalformedCertificateError("PEM input holds no CERTIFICATE block")
        return [_load_der(block) for block in blocks]
    return [_load_der(data)]


def load_certificate(data: bytes) -> AmdCertificate:
    """Exactly one certificate, PEM or DER."""
    certs = load_certificates(data)
    if len(certs) != 1:
        raise MalformedCertificateError(f"expected one certificate, found {len(certs)}")
    return certs[0]


# --- AMD extensions -------------------------------------------------------------------------
@dataclass(frozen=True)
class AmdExtensions:
    """The AMD-specific facts a V[CL]EK certifies."""

    product_name: str | None = None
    spl: Mapping[str, int] = field(default_factory=dict)
    hwid: bytes | None = None
    csp_id: str | None = None

    @property
    def kind(self) -> str | None:
        """``"vcek"`` (has hwID), ``"vlek"`` (has a CSP id) or ``None`` (neither/both)."""
        if (self.hwid is None) == (self.csp_id is None):
            return None
        return "vcek" if self.hwid is not None else "vlek"

    @property
    def product(self) -> str | None:
        return product_from_name(self.product_name) if self.product_name else None

    def tcb(self, *, turin: bool) -> TcbVersion | None:
        """The certified TCB in the given layout, or ``None`` when an SPL is missing."""
        try:
            return TcbVersion.from_parts(
                bootloader=self.spl["bootloader"],
                tee=self.spl["tee"],
                snp=self.spl["snp"],
                microcode=self.spl["microcode"],
                fmc=self.spl["fmc"] if turin else None,
            )
        except KeyError:
            return None


def _der_primitive(value: bytes, tag: int) -> bytes:
    got, start, length = _der_header(value, 0)
    if got != tag or start + length != len(value):
        raise ValueError(f"expected DER tag {tag:#04x} filling the extension")
    return value[start : start + length]


def amd_extensions(cert: x509.Certificate) -> tuple[AmdExtensions, list[str]]:
    """Decode the AMD extensions; the second item lists the ones that did not decode."""
    raw: dict[x509.ObjectIdentifier, bytes] = {}
    for ext in cert.extensions:
        if isinstance(ext.value, x509.UnrecognizedExtension):
            raw[ext.oid] = ext.value.value
    problems: list[str] = []
    spl: dict[str, int] = {}
    for name, oid in SPL_OIDS.items():
        if oid not in raw:
            continue
        try:
            value = int.from_bytes(_der_primitive(raw[oid], _DER_INTEGER), "big", signed=True)
            if not 0 <= value <= 0xFF:
                raise ValueError(f"{value} is not a one-byte SPL")
            spl[name] = value
        except ValueError as err:
            problems.append(f"{name}SPL: {err}")
    product_name = csp_id = None
    for oid, label in ((OID_PRODUCT_NAME, "productName"), (OID_CSP_ID, "cspId")):
        if oid not in raw:
            continue
        try:
            text = _der_primitive(raw[oid], _DER_IA5STRING).decode("ascii")
        except (ValueError, UnicodeDecodeError) as err:
            problems.append(f"{label}: {err}")
            continue
        if oid == OID_PRODUCT_NAME:
            product_name = text
        else:
            csp_id = text
    hwid = raw.get(OID_HWID)
    if hwid is not None and len(hwid) not in (HWID_SIZE, TURIN_HWID_SIZE):
        problems.append(f"hwID: {len(hwid)} bytes, expected {HWID_SIZE} or {TURIN_HWID_SIZE}")
        hwid = None
    return AmdExtensions(product_name, spl, hwid, csp_id), problems


# --- Trust anchors --------------------------------------------------------------------------
@dataclass(frozen=True)
class Roots:
    """What the verifier trusts: pins per product, plus certificates from a trust directory.

    ``certificates`` (DER) are only a source of bytes: each is used only if its fingerprint
    matches a pin, exactly like a certificate that came with the evidence.
    """

    pins: tuple[tuple[str, ProductPins], ...]
    certificates: tuple[bytes, ...] = ()

    @classmethod
    def amd(cls, certificates: Iterable[bytes] = ()) -> Roots:
        return cls(tuple(AMD_PINS.items()), tuple(certificates))

    @classmethod
    def from_pins(
        cls, pins: Mapping[str, ProductPins], certificates: Iterable[bytes] = ()
    ) -> Roots:
        return cls(tuple(pins.items()), tuple(certificates))

    def with_certificates(self, certificates: Iterable[bytes]) -> Roots:
        return Roots(self.pins, self.certificates + tuple(certificates))

    def identify(self, fingerprint: bytes) -> tuple[str, str] | None:
        """(product, role) of a pinned fingerprint, or ``None``."""
        for product, pins in self.pins:
            role = pins.role_of(fingerprint)
            if role is not None:
                return product, role
        return None

    def product_pins(self, product: str) -> ProductPins | None:
        return dict(self.pins).get(product)


# --- Chain verification ---------------------------------------------------------------------
@dataclass(frozen=True)
class ValidityWindow:
    label: str
    not_before: datetime
    not_after: datetime


@dataclass(frozen=True)
class VerifiedChain:
    """Time-independent result of checking a V[CL]EK against the pinned hierarchy.

    ``failures`` is empty when every signature and pin check passed; the caller still has to
    check ``validity_failures(at)`` and the report against ``leaf_key`` and ``extensions``.
    """

    leaf: AmdCertificate
    leaf_key: ec.EllipticCurvePublicKey | None
    extensions: AmdExtensions
    signer_kind: str | None
    product: str | None
    intermediate: AmdCertificate | None
    root: AmdCertificate | None
    failures: tuple[Failure, ...]
    windows: tuple[ValidityWindow, ...]

    @property
    def leaf_label(self) -> str:
        return self.signer_kind or self.extensions.kind or "vcek"

    def validity_failures(self, at: datetime) -> list[Failure]:
        found = []
        for window in self.windows:
            if at < window.not_before or at > window.not_after:
                found.append(
                    Failure(
                        check=f"snp.{window.label}.validity",
                        expected=f"{window.not_before.isoformat()} .. "
                        f"{window.not_after.isoformat()}",
                        actual=at.isoformat(),
                        detail="expired" if at > window.not_after else "not yet valid",
                    )
                )
        return found


def check_pss_signature(child: AmdCertificate, issuer: AmdCertificate) -> str | None:
    """Why ``child`` is not signed by ``issuer`` under AMD's RSA-PSS parameters, or ``None``."""
    key = issuer.cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return f"issuer key is {type(key).__name__}, expected RSA"
    if key.key_size < MIN_RSA_BITS:
        return f"issuer RSA key has {key.key_size} bits, expected at least {MIN_RSA_BITS}"
    if child.cert.signature_algorithm_oid != SignatureAlgorithmOID.RSASSA_PSS:
        oid = child.cert.signature_algorithm_oid.dotted_string
        return f"signature algorithm {oid}, expected RSASSA-PSS"
    if not isinstance(child.cert.signature_hash_algorithm, hashes.SHA384):
        return "signature hash is not SHA-384"
    if child.cert.issuer != issuer.cert.subject:
        return f"issuer name {child.cert.issuer.rfc4514_string()} != {issuer.subject}"
    try:
        key.verify(child.cert.signature, child.tbs, AMD_PSS, hashes.SHA384())
    except InvalidSignature:
        return "signature does not verify"
    return None


def _window(label: str, cert: AmdCertificate) -> ValidityWindow:
    return ValidityWindow(label, cert.cert.not_valid_before_utc, cert.cert.not_valid_after_utc)


def verify_chain(
    leaf: AmdCertificate,
    supplied: Sequence[AmdCertificate],
    roots: Roots,
    *,
    product_hint: str | None = None,
) -> VerifiedChain:
    """Check ``leaf`` up to a pinned ARK using ``supplied`` and ``roots`` certificates.

    Every supplied certificate must be pinned (an unknown ASK or ARK is a failure even when a
    pinned one is also present), and all must belong to one product line.
    """
    failures: list[Failure] = []
    extensions, problems = amd_extensions(leaf.cert)
    leaf_kind = extensions.kind
    label = leaf_kind or "vcek"
    for text in problems:
        failures.append(Failure(f"snp.{label}.extensions", "decodable AMD extensions", text))

    key = leaf.cert.public_key()
    leaf_key: ec.EllipticCurvePublicKey | None = None
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP384R1):
        leaf_key = key
    else:
        failures.append(Failure(f"snp.{label}.key", "ECDSA P-384 public key", type(key).__name__))

    pool: dict[bytes, tuple[AmdCertificate, str, str]] = {}
    for cert in supplied:
        if cert.fingerprint == leaf.fingerprint:
            continue
        ident = roots.identify(cert.fingerprint)
        if ident is None:
            failures.append(
                Failure(
                    "snp.chain.pinned", "only pinned AMD ARK/ASK/ASVK certificates", cert.describe()
                )
            )
            continue
        pool[cert.fingerprint] = (cert, *ident)
    for der in roots.certificates:
        cert = _load_der(der)
        ident = roots.identify(cert.fingerprint)
        if ident is not None:
            pool.setdefault(cert.fingerprint, (cert, *ident))

    intermediates = [
        entry
        for entry in pool.values()
        if entry[2] in (ROLE_ASK, ROLE_ASVK) and entry[0].cert.subject == leaf.cert.issuer
    ]
    if product_hint is not None:
        intermediates.sort(key=lambda entry: entry[1] != product_hint)
    intermediate: AmdCertificate | None = None
    product = product_hint or extensions.product
    signer_kind: str | None = None
    root: AmdCertificate | None = None
    if not intermediates:
        role = ROLE_FOR_SIGNER.get(label, ROLE_ASK)
        failures.append(
            Failure(
                f"snp.{role}.missing",
                f"a pinned {role.upper()} issuing {leaf.cert.issuer.rfc4514_string()}",
                "none supplied (evidence chain, trust directory or KDS)",
            )
        )
    else:
        chosen = next(
            (entry for entry in intermediates if check_pss_signature(leaf, entry[0]) is None),
            intermediates[0],
        )
        intermediate, product, role = chosen
        signer_kind = SIGNER_FOR_ROLE[role]
        label = signer_kind
        problem = check_pss_signature(leaf, intermediate)
        if problem:
            failures.append(
                Failure(f"snp.{label}.signature", f"signed by {intermediate.describe()}", problem)
            )
        pins = roots.product_pins(product)
        root_entry = pool.get(pins.ark) if pins else None
        if root_entry is None:
            failures.append(
                Failure(
                    "snp.ark.missing",
                    f"pinned ARK-{product}",
                    "none supplied (evidence chain, trust directory or KDS)",
                )
            )
        else:
            root = root_entry[0]
            problem = check_pss_signature(intermediate, root)
            if problem:
                failures.append(
                    Failure(f"snp.{role}.signature", f"signed by {root.describe()}", problem)
                )
            problem = check_pss_signature(root, root)
            if problem:
                failures.append(Failure("snp.ark.signature", "valid self-signature", problem))

    if product is not None:
        for cert, other, _role in pool.values():
            if other != product:
                failures.append(
                    Failure(
                        "snp.chain.product",
                        f"certificates of {product}",
                        f"{other}: {cert.describe()}",
                    )
                )
        named = extensions.product
        if extensions.product_name is not None and named != product:
            failures.append(
                Failure(f"snp.{label}.product", product, f"productName {extensions.product_name!r}")
            )
    if signer_kind is not None and leaf_kind is not None and leaf_kind != signer_kind:
        failures.append(
            Failure(
                f"snp.{signer_kind}.kind",
                f"a {signer_kind.upper()} (issued by the {ROLE_FOR_SIGNER[signer_kind].upper()})",
                f"certificate extensions of a {leaf_kind.upper()}",
            )
        )

    windows = [_window(label, leaf)]
    if intermediate is not None:
        windows.append(_window(ROLE_FOR_SIGNER.get(label, ROLE_ASK), intermediate))
    if root is not None:
        windows.append(_window(ROLE_ARK, root))
    return VerifiedChain(
        leaf=leaf,
        leaf_key=leaf_key,
        extensions=extensions,
        signer_kind=signer_kind or leaf_kind,
        product=product,
        intermediate=intermediate,
        root=root,
        failures=tuple(failures),
        windows=tuple(windows),
    )
