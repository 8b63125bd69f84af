"""Evidence from a (v)TPM: issue a PCR quote on the node, validate it anywhere.

Document (UTF-8 JSON, binary fields base64)::

    {"version": 1, "variant": "qemu-vtpm",
     "user_data": ..., "instance_info": ...,
     "ak_public": <TPMT_PUBLIC of the attestation key>,
     "ak_certificate": <DER AK certificate from the platform> | null,
     "quotes": [{"attest": <TPMS_ATTEST>, "signature": <TPMT_SIGNATURE>}],
     "pcrs": {"0": <32-byte SHA-256 PCR value>, ..., "23": ...},
     "event_log": <TCG crypto-agile log> | null}

Binding (DESIGN.md §3): the quote's qualifying data is
``SHA-256(instance_info || SHA-256(user_data || nonce))`` over the exact ``instance_info``
bytes carried in the document. The validator checks the SHA-256 quote itself (a document
without one is rejected), replays the event log against the quoted PCRs, compares the
expected measurements and reports every failure at once. It is pure: bytes and trusted inputs
in, ``VerifiedEvidence`` or an exception out.

Rooting the AK (fail closed): a quote proves only that *some* key with the claimed
attributes signed it. A validator accepts a document only if the AK is rooted by one of

- an AK certificate (``identity.verify``) chaining to a configured platform root and
  certifying exactly this AK; the certificate's name and role become
  ``VerifiedEvidence.identity``;
- a pin (``trusted_ak_keys``) naming this AK's SubjectPublicKeyInfo;
- another stage of the same validation (``ak_rooted_elsewhere``: the SEV-SNP variants, whose
  report binds the AK).

With none of them configured every document is refused (``ak.root``).

The issuer talks to a TPM through tpm2-pytss. Its AK is a primary key of the owner hierarchy
made persistent at ``AK_HANDLE`` the first time it is needed (``provision_ak``), so the key a
platform certified is the key every later quote uses. swtpm has no resource manager, so every
transient object the issuer creates is flushed before the connection closes, also on error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from constellation.attestation.boundedparse import loads_json
from constellation.attestation.errors import (
    AttestationError,
    Failure,
    MalformedEvidenceError,
    ValidationError,
)
from constellation.attestation.eventlog import (
    DEFAULT_REPLAY_PCRS,
    EV_IPL,
    Event,
    append_event,
    check_replay,
    parse_event_log,
)
from constellation.attestation.evidence import VerifiedEvidence, extra_data
from constellation.attestation.identity import NodeIdentity
from constellation.attestation.identity.verify import verify_ak_certificate
from constellation.attestation.measurements import Measurements
from constellation.attestation.tpm import (
    HASH_SIZES,
    TPM_ALG_SHA256,
    Attest,
    TpmPublic,
    check_quote,
    parse_attest,
    parse_signature,
    parse_tpmt_public,
    pcr_digest,
)

DOCUMENT_VERSION = 1
QEMU_VTPM = "qemu-vtpm"
PCR_COUNT = 24
QUOTED_PCRS = tuple(range(PCR_COUNT))
SHA256_SIZE = HASH_SIZES[TPM_ALG_SHA256]
MAX_DOCUMENT_SIZE = 16 << 20
DEFAULT_AK_TEMPLATE = "ecc256:ecdsa-sha256:null"
# Where the AK lives: an owner-hierarchy persistent handle (TCG reserves 0x81000000..0x8100FFFF
# for owner objects; 0x81000001/2 are customarily the SRK and the EK's companions).
AK_HANDLE = 0x81000003
PERSISTENT_OWNER_HANDLES = range(0x81000000, 0x81800000)
# A TPM returns at most 8 PCR values per TPM2_PCR_Read; reading 24 takes a few rounds.
MAX_PCR_READ_ROUNDS = 8
# PCRs may change between quote and read (e.g. the node lock); retry a bounded number of times.
MAX_QUOTE_ATTEMPTS = 3

EventLogSource = bytes | Callable[[], bytes | None] | None
AkCertificateSource = bytes | Callable[[], bytes | None] | None
Clock = Callable[[], datetime]


class TpmError(AttestationError):
    """Talking to the TPM failed (not reachable, or a command returned an error)."""


class PcrsChangedError(TpmError):
    """PCRs were extended while they were being read or quoted; reading again may succeed."""


def qualifying_data(instance_info: bytes, user_data: bytes, nonce: bytes) -> bytes:
    """What the quote's ``extraData`` must be: ``SHA-256(instance_info || extra_data)``."""
    return hashlib.sha256(instance_info + extra_data(user_data, nonce)).digest()


# --------------------------------------------------------------------------------------------
# Talking to the TPM


@contextmanager
def open_tpm(tcti: str) -> Iterator[Any]:
    """An ESAPI connection to the TPM at ``tcti`` (e.g. ``swtpm:path=D/sock``)."""
    from tpm2_pytss import ESAPI, TSS2_Exception

    try:
        esapi = ESAPI(tcti)
    except (TSS2_Exception, RuntimeError) as exc:
        raise TpmError(f"cannot open TPM via TCTI {tcti!r}: {exc}") from None
    try:
        yield esapi
    except TSS2_Exception as exc:
        raise TpmError(f"TPM command failed: {exc}") from None
    finally:
        esapi.close()


def _selection(bank: str, pcrs: Sequence[int]) -> Any:
    from tpm2_pytss.types import TPML_PCR_SELECTION

    return TPML_PCR_SELECTION.parse(f"{bank}:" + ",".join(map(str, pcrs)))


def read_pcrs(
    esapi: Any, pcrs: Sequence[int] = QUOTED_PCRS, bank: str = "sha256"
) -> tuple[int, dict[int, bytes]]:
    """``(update counter, {index: value})`` for ``pcrs`` of one bank, in bounded rounds."""
    values: dict[int, bytes] = {}
    counter = -1
    pending = sorted(pcrs)
    for _ in range(MAX_PCR_READ_ROUNDS):
        if not pending:
            break
        update, selection, digests = esapi.pcr_read(_selection(bank, pending))
        if counter not in (-1, update):
            raise PcrsChangedError("PCRs changed while they were being read")
        counter = update
        returned = [i for s in selection for i in _selected(s)]
        if not returned:
            break
        if len(returned) != len(digests):
            raise TpmError("TPM returned a PCR selection that does not match its values")
        for index, digest in zip(returned, digests, strict=True):
            values[index] = bytes(digest)
        pending = [i for i in pending if i not in values]
    if pending:
        raise TpmError(f"TPM did not return PCRs {pending} of bank {bank}")
    return counter, values


def _selected(selection: Any) -> list[int]:
    bitmap = bytes(selection.pcrSelect)[: selection.sizeofSelect]
    return [
        byte * 8 + bit for byte in range(len(bitmap)) for bit in range(8) if bitmap[byte] >> bit & 1
    ]


def _ak_template(template: str) -> Any:
    """The AK's ``TPM2B_PUBLIC`` template: a restricted signing key that never leaves the TPM."""
    from tpm2_pytss.constants import TPMA_OBJECT
    from tpm2_pytss.types import TPM2B_PUBLIC

    attributes = (
        TPMA_OBJECT.RESTRICTED
        | TPMA_OBJECT.SIGN_ENCRYPT
        | TPMA_OBJECT.FIXEDTPM
        | TPMA_OBJECT.FIXEDPARENT
        | TPMA_OBJECT.SENSITIVEDATAORIGIN
        | TPMA_OBJECT.USERWITHAUTH
    )
    return TPM2B_PUBLIC.parse(template, objectAttributes=attributes)


def _is_persisted(esapi: Any, handle: int) -> bool:
    from tpm2_pytss.constants import TPM2_CAP

    _, data = esapi.get_capability(TPM2_CAP.HANDLES, handle, 1)
    return handle in list(data.data.handles)


def _provision(esapi: Any, template: str, handle: int) -> None:
    """Create the AK as an owner primary and persist it at ``handle``, unless it is there.

    The transient copy is flushed whatever happens. If persisting fails because another
    connection persisted the AK first, that AK is the one to use.
    """
    from tpm2_pytss import TSS2_Exception
    from tpm2_pytss.constants import ESYS_TR
    from tpm2_pytss.types import TPM2B_SENSITIVE_CREATE

    if _is_persisted(esapi, handle):
        return
    transient, _, _, _, _ = esapi.create_primary(
        TPM2B_SENSITIVE_CREATE(), _ak_template(template), ESYS_TR.OWNER
    )
    try:
        persistent = esapi.evict_control(ESYS_TR.OWNER, transient, handle)
        esapi.tr_close(persistent)
    except TSS2_Exception:
        if not _is_persisted(esapi, handle):
            raise
    finally:
        esapi.flush_context(transient)


def _matches_template(public: Any, template: str) -> bool:
    """Whether ``public`` is the key ``template`` makes, apart from its unique public point."""
    expected = _ak_template(template)
    if expected.publicArea.type != public.publicArea.type:
        return False
    expected.publicArea.unique = public.publicArea.unique
    return bytes(expected.publicArea.marshal()) == bytes(public.publicArea.marshal())


@contextmanager
def _attestation_key(esapi: Any, template: str, handle: int) -> Iterator[tuple[Any, bytes]]:
    """The persistent AK at ``handle`` (provisioned on first use) and its ``TPMT_PUBLIC``.

    The key at ``handle`` must be the one ``template`` describes: a different key there (an
    RSA AK where ECDSA is asked for, or a key without the AK attributes) is refused rather
    than used. Only the ESYS resource is closed afterwards; the key stays in the TPM.
    """
    if handle not in PERSISTENT_OWNER_HANDLES:
        raise TpmError(
            f"AK handle {handle:#x} is not an owner persistent handle "
            f"({PERSISTENT_OWNER_HANDLES.start:#x}..{PERSISTENT_OWNER_HANDLES.stop - 1:#x})"
        )
    _provision(esapi, template, handle)
    resource = esapi.tr_from_tpmpublic(handle)
    try:
        public, _, _ = esapi.read_public(resource)
        if not _matches_template(public, template):
            raise TpmError(
                f"persistent handle {handle:#x} holds a key other than an AK of template "
                f"{template!r}; evict it (tpm2_evictcontrol -c {handle:#x}) or use another "
                "AK handle"
            )
        yield resource, bytes(public.publicArea.marshal())
    finally:
        esapi.tr_close(resource)


def provision_ak(tcti: str, template: str = DEFAULT_AK_TEMPLATE, handle: int = AK_HANDLE) -> bytes:
    """Make sure the TPM at ``tcti`` holds its AK at ``handle`` and return its ``TPMT_PUBLIC``.

    Idempotent: an AK already persisted there is returned as is. This is the step a platform
    runs when it creates a vTPM, before it certifies the AK (``ak_spki_der`` of the result).
    """
    with open_tpm(tcti) as esapi, _attestation_key(esapi, template, handle) as (_, public):
        return public


def ak_spki_der(tpmt_public: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of an AK's ``TPMT_PUBLIC``: what an AK certificate holds."""
    return parse_tpmt_public(tpmt_public).spki_der()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class VtpmIssuer:
    """Issues vTPM evidence: a SHA-256 quote over PCRs 0..23 bound to user data and a nonce.

    ``event_log`` is the log to attach: bytes, a callable returning the current log (mini mode
    re-reads its firmware log), or ``None``. ``ak_certificate`` is the platform's certificate
    of this vTPM's AK, in the same three forms (the document carries ``null`` without one,
    which a ``qemu-vtpm`` validator with platform roots refuses). ``quote_banks`` lists the
    banks quoted; the validator only trusts the SHA-256 one, other banks are carried for
    inspection. The AK is the persistent key at ``ak_handle`` (see ``provision_ak``).
    """

    def __init__(
        self,
        tcti: str,
        *,
        variant: str = QEMU_VTPM,
        instance_info: bytes = b"",
        event_log: EventLogSource = None,
        ak_certificate: AkCertificateSource = None,
        ak_template: str = DEFAULT_AK_TEMPLATE,
        ak_handle: int = AK_HANDLE,
        quote_banks: Sequence[str] = ("sha256",),
    ) -> None:
        self._tcti = tcti
        self._variant = variant
        self._instance_info = bytes(instance_info)
        self._event_log = event_log
        self._ak_certificate = ak_certificate
        self._ak_template = ak_template
        self._ak_handle = ak_handle
        self._quote_banks = tuple(quote_banks)
        self._lock = threading.Lock()

    @property
    def variant(self) -> str:
        return self._variant

    def ak_public(self) -> bytes:
        """The AK's ``TPMT_PUBLIC`` (what a verifier may pin, what a platform certifies)."""
        with (
            self._lock,
            open_tpm(self._tcti) as esapi,
            _attestation_key(esapi, self._ak_template, self._ak_handle) as (_, public),
        ):
            return public

    def _current_event_log(self) -> bytes | None:
        source = self._event_log
        log = source() if callable(source) else source
        return bytes(log) if log else None

    def _current_ak_certificate(self) -> bytes | None:
        source = self._ak_certificate
        certificate = source() if callable(source) else source
        return bytes(certificate) if certificate else None

    def _quote_once(
        self, esapi: Any, handle: Any, qualifying: bytes
    ) -> tuple[dict[int, bytes], list[dict[str, str]]]:
        """Read PCRs, quote every bank, and make sure the quote covers the values read.

        The PCR update counter is not enough for this: a TPM does not count extends of some
        PCRs (16 and 21..23 on PC-client TPMs). So the SHA-256 quote's digest is compared with
        the digest of the values read, and a mismatch means "read again".
        """
        from tpm2_pytss.constants import TPM2_ALG
        from tpm2_pytss.types import TPM2B_DATA, TPMT_SIG_SCHEME

        _, pcrs = read_pcrs(esapi)
        read_digest = pcr_digest(pcrs, QUOTED_PCRS, TPM_ALG_SHA256)
        quotes = []
        for bank in self._quote_banks:
            attest, signature = esapi.quote(
                handle,
                _selection(bank, QUOTED_PCRS),
                TPM2B_DATA(qualifying),
                TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL),
            )
            attest_bytes = bytes(attest.attestationData)
            if bank == "sha256" and parse_attest(attest_bytes).pcr_digest != read_digest:
                raise PcrsChangedError("PCRs changed between reading and quoting")
            quotes.append(
                {"attest": _b64(attest_bytes), "signature": _b64(bytes(signature.marshal()))}
            )
        return pcrs, quotes

    def issue(self, user_data: bytes, nonce: bytes) -> bytes:
        """Quote PCRs 0..23 with qualifying data bound to ``user_data`` and ``nonce``."""
        qualifying = qualifying_data(self._instance_info, user_data, nonce)
        with (
            self._lock,
            open_tpm(self._tcti) as esapi,
            _attestation_key(esapi, self._ak_template, self._ak_handle) as (handle, ak_public),
        ):
            for _ in range(MAX_QUOTE_ATTEMPTS):
                try:
                    pcrs, quotes = self._quote_once(esapi, handle, qualifying)
                    break
                except PcrsChangedError:
                    continue
            else:
                raise TpmError("PCRs kept changing while quoting; giving up")
        event_log = self._current_event_log()
        ak_certificate = self._current_ak_certificate()
        document = {
            "version": DOCUMENT_VERSION,
            "variant": self._variant,
            "user_data": _b64(user_data),
            "instance_info": _b64(self._instance_info),
            "ak_public": _b64(ak_public),
            "ak_certificate": None if ak_certificate is None else _b64(ak_certificate),
            "quotes": quotes,
            "pcrs": {str(i): _b64(v) for i, v in sorted(pcrs.items())},
            "event_log": None if event_log is None else _b64(event_log),
        }
        return json.dumps(document, sort_keys=True).encode()


def firmware_measure(
    tcti: str,
    log: bytes,
    pcr: int,
    digest: bytes,
    event_data: bytes = b"",
    *,
    event_type: int = EV_IPL,
) -> bytes:
    """Extend ``pcr`` (SHA-256 bank) with ``digest`` and return ``log`` with the matching event.

    This is the "firmware" of mini mode: it measures the node image into PCRs 4/9/11 and keeps a
    real TCG event log of what it measured, so the validator can replay it. The caller writes
    the returned log where the issuer reads it.
    """
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG
    from tpm2_pytss.types import TPML_DIGEST_VALUES, TPMT_HA, TPMU_HA

    if not 0 <= pcr < PCR_COUNT:
        raise TpmError(f"PCR index {pcr} out of range 0..23")
    if len(digest) != SHA256_SIZE:
        raise TpmError(f"a SHA-256 digest has 32 bytes, got {len(digest)}")
    event = Event(pcr, event_type, {TPM_ALG_SHA256: digest}, event_data)
    new_log = append_event(log, event)  # validates the log before the PCR changes
    values = TPML_DIGEST_VALUES([TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=digest))])
    with open_tpm(tcti) as esapi:
        esapi.pcr_extend(ESYS_TR.parse(f"PCR{pcr}"), values)
    return new_log


# --------------------------------------------------------------------------------------------
# Validation (pure)


def _field(doc: Mapping[str, Any], name: str) -> bytes:
    value = doc.get(name)
    if not isinstance(value, str):
        raise MalformedEvidenceError(f"vTPM document: field '{name}' must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedEvidenceError(f"vTPM document: field '{name}' is not base64") from None


def _parse_document(document: bytes) -> dict[str, Any]:
    doc = loads_json(
        document, max_size=MAX_DOCUMENT_SIZE, error=MalformedEvidenceError, what="vTPM document"
    )
    if not isinstance(doc, dict):
        raise MalformedEvidenceError("vTPM document must be a JSON object")
    version = doc.get("version")
    # bool is an int in Python (True == 1): only the integer itself names this format.
    if type(version) is not int or version != DOCUMENT_VERSION:
        raise MalformedEvidenceError(
            f"vTPM document version {doc.get('version')!r}, expected {DOCUMENT_VERSION}"
        )
    return doc


def _parse_pcrs(doc: Mapping[str, Any]) -> dict[int, bytes]:
    raw = doc.get("pcrs")
    if not isinstance(raw, dict):
        raise MalformedEvidenceError("vTPM document: 'pcrs' must be an object")
    pcrs: dict[int, bytes] = {}
    for key, value in raw.items():
        # isdigit() alone admits "²" and other digits int() refuses: ASCII decimals only.
        if not (
            isinstance(key, str) and key.isascii() and key.isdecimal() and int(key) < PCR_COUNT
        ):
            raise MalformedEvidenceError(f"vTPM document: PCR index {key!r} is not 0..23")
        if not isinstance(value, str):
            raise MalformedEvidenceError(f"vTPM document: PCR {key} must be base64")
        try:
            pcrs[int(key)] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise MalformedEvidenceError(f"vTPM document: PCR {key} is not base64") from None
    return pcrs


@dataclass(frozen=True)
class QuoteFindings:
    """The outcome of the vTPM checks on one document, before the verdict.

    ``quote`` is the SHA-256 quote when its signature, qualifying data and digest verified;
    ``failures``/``warnings`` hold every enforced and warn-only finding of the vTPM stage;
    ``identity`` is what the AK certificate established, when one was required and verified.
    """

    document: Mapping[str, Any] = field(repr=False)
    user_data: bytes
    instance_info: bytes
    ak: TpmPublic
    pcrs: Mapping[int, bytes]
    quote: Attest | None
    event_count: int
    failures: tuple[Failure, ...]
    warnings: tuple[Failure, ...]
    identity: NodeIdentity | None = None

    def details(self) -> dict[str, Any]:
        """Public facts of the vTPM stage for ``VerifiedEvidence.details``."""
        return {
            "ak_spki_sha256": hashlib.sha256(self.ak.spki_der()).hexdigest(),
            "instance_info": self.instance_info,
            "clock": None if self.quote is None else self.quote.clock,
            "reset_count": None if self.quote is None else self.quote.reset_count,
            "restart_count": None if self.quote is None else self.quote.restart_count,
            "event_count": self.event_count,
        }

    def decide(
        self,
        variant: str,
        *,
        failures: Sequence[Failure] = (),
        warnings: Sequence[Failure] = (),
        details: Mapping[str, Any] | None = None,
    ) -> VerifiedEvidence:
        """The verdict over these findings plus another stage's ``failures``/``warnings``.

        Rejects when any stage failed or the quote did not verify; otherwise returns the
        evidence with every warning and the vTPM details updated by ``details``.
        """
        all_failures = [*self.failures, *failures]
        all_warnings = [*self.warnings, *warnings]
        if all_failures or self.quote is None:
            raise ValidationError(all_failures, all_warnings, subject=f"{variant} evidence")
        return VerifiedEvidence(
            variant=variant,
            user_data=self.user_data,
            pcrs=dict(self.pcrs),
            warnings=tuple(all_warnings),
            details={**self.details(), **(details or {})},
            identity=self.identity,
        )


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _optional_field(doc: Mapping[str, Any], name: str) -> bytes | None:
    return None if doc.get(name) is None else _field(doc, name)


class VtpmValidator:
    """Validates vTPM documents against expected measurements. Pure: no I/O.

    The AK must be rooted, or every document is refused (module docstring):
    ``platform_roots`` are the platform CA certificates an AK certificate must chain to (the
    verified name and role become ``VerifiedEvidence.identity``); ``trusted_ak_keys`` (DER
    SubjectPublicKeyInfo) pins the AKs accepted; ``ak_rooted_elsewhere`` says a caller's other
    stage roots the AK (the SEV-SNP wrappers). ``clock`` is the time certificates must be valid
    at. ``require_event_log`` rejects documents without a log instead of skipping replay.
    """

    def __init__(
        self,
        measurements: Measurements,
        *,
        variant: str = QEMU_VTPM,
        platform_roots: Sequence[x509.Certificate] | None = None,
        trusted_ak_keys: Collection[bytes] | None = None,
        ak_rooted_elsewhere: bool = False,
        require_event_log: bool = True,
        clock: Clock = _utc_now,
        replay_pcrs: Sequence[int] = DEFAULT_REPLAY_PCRS,
    ) -> None:
        roots = tuple(platform_roots or ())
        if not all(isinstance(root, x509.Certificate) for root in roots):
            raise TypeError("platform_roots must be x509.Certificate objects (load_platform_roots)")
        self._measurements = measurements
        self._variant = variant
        self._roots = roots
        self._trusted = None if trusted_ak_keys is None else frozenset(trusted_ak_keys)
        self._rooted_elsewhere = ak_rooted_elsewhere
        self._require_event_log = require_event_log
        self._clock = clock
        self._replay_pcrs = tuple(replay_pcrs)

    @property
    def variant(self) -> str:
        return self._variant

    @property
    def measurements(self) -> Measurements:
        return self._measurements

    @property
    def platform_roots(self) -> tuple[x509.Certificate, ...]:
        return self._roots

    def _root_ak(
        self, ak: TpmPublic, certificate: bytes | None
    ) -> tuple[NodeIdentity | None, list[Failure]]:
        """Every configured way of rooting the AK, checked; the identity if a certificate was."""
        spki = ak.spki_der()
        identity: NodeIdentity | None = None
        failures: list[Failure] = []
        if self._roots:
            identity, certificate_failures = verify_ak_certificate(
                certificate, ak_spki_der=spki, roots=self._roots, at=self._clock()
            )
            failures.extend(certificate_failures)
        if self._trusted is not None and spki not in self._trusted:
            failures.append(
                Failure(
                    "ak.trusted",
                    "one of the pinned attestation keys",
                    hashlib.sha256(spki).hexdigest()[:16] + "… (SPKI SHA-256)",
                )
            )
        if not self._roots and self._trusted is None and not self._rooted_elsewhere:
            failures.append(
                Failure(
                    "ak.root",
                    "an AK certificate chaining to a configured platform root",
                    "no platform root configured",
                    detail="configure the platform CA certificate(s) as platform roots; "
                    "without a root any software key could sign this quote",
                )
            )
        return identity, failures

    def examine(self, document: bytes, nonce: bytes) -> QuoteFindings:
        """Run every vTPM check and return the findings without deciding.

        Validators that root the AK elsewhere (the SEV-SNP variants) add their own failures to
        these before deciding, so one rejection lists the failures of every stage. Malformed
        documents still raise ``MalformedEvidenceError``.
        """
        doc = _parse_document(document)
        user_data = _field(doc, "user_data")
        instance_info = _field(doc, "instance_info")
        ak = parse_tpmt_public(_field(doc, "ak_public"))
        ak_certificate = _optional_field(doc, "ak_certificate")
        pcrs = _parse_pcrs(doc)
        quotes = doc.get("quotes")
        if not isinstance(quotes, list) or not quotes:
            raise MalformedEvidenceError("vTPM document: 'quotes' must be a non-empty array")
        parsed_quotes = []
        for quote in quotes:
            if not isinstance(quote, dict):
                raise MalformedEvidenceError("vTPM document: a quote must be an object")
            parsed_quotes.append(
                (parse_attest(_field(quote, "attest")), parse_signature(_field(quote, "signature")))
            )
        log_field = doc.get("event_log")
        event_log = None if log_field is None else parse_event_log(_field(doc, "event_log"))

        failures: list[Failure] = []
        if doc.get("variant") != self._variant:
            failures.append(Failure("document.variant", self._variant, str(doc.get("variant"))))
        identity, root_failures = self._root_ak(ak, ak_certificate)
        failures.extend(root_failures)
        sha256_quotes = [
            (attest, sig)
            for attest, sig in parsed_quotes
            if any(s.hash_alg == TPM_ALG_SHA256 and s.pcrs for s in attest.pcr_selection)
        ]
        verified: Attest | None = None
        if len(sha256_quotes) != 1:
            failures.append(
                Failure(
                    "quote.bank",
                    "exactly one quote over the SHA-256 bank",
                    f"{len(sha256_quotes)} SHA-256 quotes among {len(parsed_quotes)}",
                )
            )
        else:
            attest, signature = sha256_quotes[0]
            expected_qd = qualifying_data(instance_info, user_data, nonce)
            quote_failures = check_quote(ak, attest, signature, pcrs, expected_qd)
            failures.extend(quote_failures)
            if set(pcrs) != set(QUOTED_PCRS):
                failures.append(
                    Failure("quote.selection", "PCRs 0..23", ",".join(map(str, sorted(pcrs))))
                )
            if not quote_failures:
                verified = attest
        if event_log is not None:
            failures.extend(check_replay(event_log, pcrs, self._replay_pcrs))
        elif self._require_event_log:
            failures.append(
                Failure("eventlog.present", "a TCG event log", "none", detail="replay required")
            )
        measurement_failures, warnings = self._measurements.compare(pcrs)
        failures.extend(measurement_failures)
        return QuoteFindings(
            document=doc,
            user_data=user_data,
            instance_info=instance_info,
            ak=ak,
            pcrs=pcrs,
            quote=verified,
            event_count=0 if event_log is None else len(event_log.events),
            failures=tuple(failures),
            warnings=tuple(warnings),
            identity=identity,
        )

    def verify(self, document: bytes, nonce: bytes) -> VerifiedEvidence:
        """Return the verified evidence or raise ``ValidationError`` listing every failure."""
        findings = self.examine(document, nonce)
        return findings.decide(self._variant)

    def validate(self, document: bytes, nonce: bytes) -> bytes:
        return self.verify(document, nonce).user_data
