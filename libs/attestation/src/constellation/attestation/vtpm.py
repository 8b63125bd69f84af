"""Evidence from a (v)TPM: issue a PCR quote on the node, validate it anywhere.

Document (UTF-8 JSON, binary fields base64)::

    {"version": 1, "variant": "qemu-vtpm",
     "user_data": ..., "instance_info": ...,
     "ak_public": <TPMT_PUBLIC of the attestation key>,
     "quotes": [{"attest": <TPMS_ATTEST>, "signature": <TPMT_SIGNATURE>}],
     "pcrs": {"0": <32-byte SHA-256 PCR value>, ..., "23": ...},
     "event_log": <TCG crypto-agile log> | null}

Binding (DESIGN.md §3): the quote's qualifying data is
``SHA-256(instance_info || SHA-256(user_data || nonce))`` over the exact ``instance_info``
bytes carried in the document. The validator checks the SHA-256 quote itself (a document
without one is rejected), replays the event log against the quoted PCRs, compares the
expected measurements and reports every failure at once. It is pure: bytes and trusted inputs
in, ``VerifiedEvidence`` or an exception out.

The issuer talks to a TPM through tpm2-pytss. swtpm has no resource manager, so every
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
from typing import Any

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
# A TPM returns at most 8 PCR values per TPM2_PCR_Read; reading 24 takes a few rounds.
MAX_PCR_READ_ROUNDS = 8
# PCRs may change between quote and read (e.g. the node lock); retry a bounded number of times.
MAX_QUOTE_ATTEMPTS = 3

EventLogSource = bytes | Callable[[], bytes | None] | None


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
    """An ESAPI connection to the TPM at ``tcti`` (e.g. ``swtpm:host=127.0.0.1,port=P``)."""
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


@contextmanager
def _attestation_key(esapi: Any, template: str) -> Iterator[tuple[Any, bytes]]:
    """Create the AK as an owner-hierarchy primary; always flush it afterwards.

    A primary key is derived from the hierarchy seed and the template, so "creating" it again
    yields the same key: this is how the AK is loaded without persistent handles.
    """
    from tpm2_pytss.constants import ESYS_TR, TPMA_OBJECT
    from tpm2_pytss.types import TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE

    attributes = (
        TPMA_OBJECT.RESTRICTED
        | TPMA_OBJECT.SIGN_ENCRYPT
        | TPMA_OBJECT.FIXEDTPM
        | TPMA_OBJECT.FIXEDPARENT
        | TPMA_OBJECT.SENSITIVEDATAORIGIN
        | TPMA_OBJECT.USERWITHAUTH
    )
    public = TPM2B_PUBLIC.parse(template, objectAttributes=attributes)
    handle, out_public, _, _, _ = esapi.create_primary(
        TPM2B_SENSITIVE_CREATE(), public, ESYS_TR.OWNER
    )
    try:
        yield handle, bytes(out_public.publicArea.marshal())
    finally:
        esapi.flush_context(handle)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class VtpmIssuer:
    """Issues vTPM evidence: a SHA-256 quote over PCRs 0..23 bound to user data and a nonce.

    ``event_log`` is the log to attach: bytes, a callable returning the current log (mini mode
    re-reads its firmware log), or ``None``. ``quote_banks`` lists the banks quoted; the
    validator only trusts the SHA-256 one, other banks are carried for inspection.
    """

    def __init__(
        self,
        tcti: str,
        *,
        variant: str = QEMU_VTPM,
        instance_info: bytes = b"",
        event_log: EventLogSource = None,
        ak_template: str = DEFAULT_AK_TEMPLATE,
        quote_banks: Sequence[str] = ("sha256",),
    ) -> None:
        self._tcti = tcti
        self._variant = variant
        self._instance_info = bytes(instance_info)
        self._event_log = event_log
        self._ak_template = ak_template
        self._quote_banks = tuple(quote_banks)
        self._lock = threading.Lock()

    @property
    def variant(self) -> str:
        return self._variant

    def ak_public(self) -> bytes:
        """The AK's ``TPMT_PUBLIC`` (what a verifier may pin)."""
        with (
            self._lock,
            open_tpm(self._tcti) as esapi,
            _attestation_key(esapi, self._ak_template) as (_, public),
        ):
            return public

    def _current_event_log(self) -> bytes | None:
        source = self._event_log
        log = source() if callable(source) else source
        return bytes(log) if log else None

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
            _attestation_key(esapi, self._ak_template) as (handle, ak_public),
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
        document = {
            "version": DOCUMENT_VERSION,
            "variant": self._variant,
            "user_data": _b64(user_data),
            "instance_info": _b64(self._instance_info),
            "ak_public": _b64(ak_public),
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
    if len(document) > MAX_DOCUMENT_SIZE:
        raise MalformedEvidenceError(f"vTPM document larger than {MAX_DOCUMENT_SIZE} bytes")
    try:
        doc = json.loads(document)
    except (ValueError, UnicodeDecodeError):
        raise MalformedEvidenceError("vTPM document is not valid JSON") from None
    if not isinstance(doc, dict):
        raise MalformedEvidenceError("vTPM document must be a JSON object")
    if doc.get("version") != DOCUMENT_VERSION:
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
        if not (isinstance(key, str) and key.isdigit() and int(key) < PCR_COUNT):
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
    ``failures``/``warnings`` hold every enforced and warn-only finding of the vTPM stage.
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
        )


class VtpmValidator:
    """Validates vTPM documents against expected measurements. Pure: no I/O.

    ``trusted_ak_keys`` (DER SubjectPublicKeyInfo) pins the AKs accepted; ``None`` takes the AK
    as is (``qemu-vtpm`` has no root of trust for it, only PCRs). ``require_event_log`` rejects
    documents without a log instead of skipping replay.
    """

    def __init__(
        self,
        measurements: Measurements,
        *,
        variant: str = QEMU_VTPM,
        trusted_ak_keys: Collection[bytes] | None = None,
        require_event_log: bool = False,
        replay_pcrs: Sequence[int] = DEFAULT_REPLAY_PCRS,
    ) -> None:
        self._measurements = measurements
        self._variant = variant
        self._trusted = None if trusted_ak_keys is None else frozenset(trusted_ak_keys)
        self._require_event_log = require_event_log
        self._replay_pcrs = tuple(replay_pcrs)

    @property
    def variant(self) -> str:
        return self._variant

    @property
    def measurements(self) -> Measurements:
        return self._measurements

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
        if self._trusted is not None and ak.spki_der() not in self._trusted:
            failures.append(
                Failure(
                    "ak.trusted",
                    "one of the pinned attestation keys",
                    hashlib.sha256(ak.spki_der()).hexdigest()[:16] + "… (SPKI SHA-256)",
                )
            )
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
        )

    def verify(self, document: bytes, nonce: bytes) -> VerifiedEvidence:
        """Return the verified evidence or raise ``ValidationError`` listing every failure."""
        findings = self.examine(document, nonce)
        return findings.decide(self._variant)

    def validate(self, document: bytes, nonce: bytes) -> bytes:
        return self.verify(document, nonce).user_data
