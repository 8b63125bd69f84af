"""Forged evidence against a live JoinService: an attacker with network access and no TPM the
platform certified. Every forgery is refused with the check it breaks named; none gets a ticket.

The worst finding of issue 10 was the first row: a software key claiming TPM attributes, with
PCR values and an event log copied from a node's public VerificationService, got control-plane
files. It is refused now because nothing roots that key.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from constellation.attestation.eventlog import Event, append_event
from constellation.attestation.identity import Role
from constellation.attestation.identity.ca import PlatformCA
from constellation.attestation.testing.softtpm import SoftwareTpmIssuer, attest, ecdsa_signature
from constellation.attestation.tpm import (
    AK_REQUIRED_ATTRIBUTES,
    TPM_ALG_SHA1,
    TPMA_OBJECT_RESTRICTED,
)
from constellation.attestation.vtpm import qualifying_data

from .conftest import Attacker, Refusal, self_signed_ca

pytestmark = [pytest.mark.tamper, pytest.mark.e2e, pytest.mark.slow, pytest.mark.swtpm]

DENIED = grpc.StatusCode.PERMISSION_DENIED
#: The mini platform CA's own name, which an attacker's CA may copy: names prove nothing.
LOOKALIKE_CA_NAME = "constellation-mini platform CA"
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


class Edited:
    """An issuer whose documents another issuer wrote and ``edit`` then changed."""

    def __init__(self, inner: Any, edit: Callable[[dict[str, Any], bytes, bytes], None]) -> None:
        self._inner = inner
        self._edit = edit
        self.variant = inner.variant

    def issue(self, user_data: bytes, nonce: bytes) -> bytes:
        document = json.loads(self._inner.issue(user_data, nonce))
        self._edit(document, user_data, nonce)
        return json.dumps(document).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _forged_ak_certificate(attacker: Attacker, forger: SoftwareTpmIssuer, ca_name: str) -> bytes:
    """An AK certificate in the platform's exact profile, signed by the attacker's own CA."""
    key, certificate = self_signed_ca(ca_name)
    rogue_platform = PlatformCA(certificate, key)
    return rogue_platform.issue_ak_certificate(forger.ak_spki_der, "mini-cp-0", Role.CONTROL_PLANE)


def _event(pcr: int, data: bytes) -> Event:
    import hashlib

    from constellation.attestation.eventlog import EV_EVENT_TAG
    from constellation.attestation.tpm import TPM_ALG_SHA256

    return Event(pcr, EV_EVENT_TAG, {TPM_ALG_SHA256: hashlib.sha256(data).digest()}, data)


def _flip(data: bytes, index: int) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0x01
    return bytes(changed)


def _replaying(inner: Any) -> Any:
    """Evidence quoted for a nonce of the attacker's choosing, presented for the server's."""

    class Replay:
        variant = inner.variant

        def issue(self, user_data: bytes, nonce: bytes) -> bytes:
            return inner.issue(user_data, bytes(len(nonce)))

    return Replay()


def _relabelled(inner: Any, variant: str) -> Any:
    class Relabelled:
        def issue(self, user_data: bytes, nonce: bytes) -> bytes:
            return inner.issue(user_data, nonce)

    relabelled = Relabelled()
    relabelled.variant = variant  # type: ignore[attr-defined]
    return relabelled


def _sha1_only(forger: SoftwareTpmIssuer) -> Any:
    def edit(document: dict[str, Any], user_data: bytes, nonce: bytes) -> None:
        quote = attest(qualifying_data(b"", user_data, nonce), forger.pcrs, bank=TPM_ALG_SHA1)
        document["quotes"] = [
            {"attest": _b64(quote), "signature": _b64(ecdsa_signature(forger.key, quote))}
        ]

    return Edited(forger, edit)


def _rewrite_first_event_data(document: dict[str, Any], user_data: bytes, nonce: bytes) -> None:
    from constellation.attestation.eventlog import encode_event_log, parse_event_log

    log = parse_event_log(base64.b64decode(document["event_log"]))
    first = log.events[0]
    forged = first.__class__(first.pcr, first.event_type, first.digests, b"a different story")
    document["event_log"] = _b64(encode_event_log([forged, *log.events[1:]]))


def _append_event(pcr: int) -> Callable[[dict[str, Any], bytes, bytes], None]:
    def edit(document: dict[str, Any], user_data: bytes, nonce: bytes) -> None:
        log = base64.b64decode(document["event_log"])
        document["event_log"] = _b64(append_event(log, _event(pcr, b"made up")))

    return edit


def _drop_event(pcr: int) -> Callable[[dict[str, Any], bytes, bytes], None]:
    """Cut the events of ``pcr`` from the log: the log then says nothing about that PCR, but
    its quoted value is still judged by the measurements."""

    def edit(document: dict[str, Any], user_data: bytes, nonce: bytes) -> None:
        from constellation.attestation.eventlog import encode_event_log, parse_event_log

        log = parse_event_log(base64.b64decode(document["event_log"]))
        kept = [event for event in log.events if event.pcr != pcr]
        document["event_log"] = _b64(encode_event_log(kept))

    return edit


def _bound_to_other_key(attacker: Attacker) -> Refusal:
    """Genuine evidence of the attacker's platform-certified machine, but bound to a TLS key
    other than the one this connection authenticates."""
    session = attacker.raw_session()
    try:
        issuer = attacker.insider().issuer()
        other = atls_user_data_of_another_key()
        evidence = issuer.issue(other, session.server_nonce)
        return session.join(attacker.request(), evidence=evidence, nonce=session.server_nonce)
    finally:
        session.close()


def atls_user_data_of_another_key() -> bytes:
    from constellation.attestation.atls.certificates import new_client_identity
    from constellation.attestation.atls.protocol import atls_user_data

    return atls_user_data(new_client_identity().spki_hash)


def _verification_evidence_as_atls(attacker: Attacker) -> Refusal:
    """A genuine node's VerificationService quote, replayed as that node's aTLS evidence."""
    session = attacker.raw_session()
    try:
        document = attacker.public_document("mini-worker-0")
        return session.join(attacker.request(), evidence=document, nonce=session.server_nonce)
    finally:
        session.close()


def _raw_evidence(attacker: Attacker, document: bytes) -> Refusal:
    session = attacker.raw_session()
    try:
        return session.join(attacker.request(), evidence=document, nonce=session.server_nonce)
    finally:
        session.close()


# Each attack: (how, expected status, failed checks named in the refusal).
ATTACKS: dict[str, tuple[Callable[[Attacker], Refusal], grpc.StatusCode, tuple[str, ...]]] = {
    # -- no root for the AK -------------------------------------------------------------------
    "software-key-copied-pcrs-no-certificate": (
        lambda a: a.join(a.forger(), a.request("mini-cp-9", control_plane=True)),
        DENIED,
        ("ak.certificate",),
    ),
    "software-key-with-a-nodes-stolen-certificate": (
        lambda a: a.join(a.forger(ak_certificate=a.copied()[2])),
        DENIED,
        ("ak.certificate.key",),
    ),
    "software-key-certified-by-own-ca-posing-as-platform": (
        lambda a: (
            lambda f: a.join(
                SoftwareTpmIssuer(
                    f.pcrs,
                    f.event_log,
                    _forged_ak_certificate(a, f, LOOKALIKE_CA_NAME),
                    key=f.key,
                ),
                a.request("mini-cp-0", control_plane=True),
            )
        )(a.forger()),
        DENIED,
        ("ak.certificate.chain",),
    ),
    "software-key-with-a-certificate-of-garbage": (
        lambda a: a.join(a.forger(ak_certificate=b"\x30\x82\x01\x00" + bytes(64))),
        DENIED,
        ("ak.certificate",),
    ),
    "software-key-claiming-no-restricted-attribute": (
        lambda a: a.join(a.forger(attributes=AK_REQUIRED_ATTRIBUTES & ~TPMA_OBJECT_RESTRICTED)),
        DENIED,
        ("ak.attributes", "ak.certificate"),
    ),
    "own-swtpm-genuine-boot-no-certificate": (
        lambda a: a.join(
            Edited(a.insider().issuer(), lambda d, u, n: d.update(ak_certificate=None))
        ),
        DENIED,
        ("ak.certificate",),
    ),
    "own-swtpm-genuine-boot-with-a-nodes-stolen-certificate": (
        lambda a: (
            lambda stolen: a.join(
                Edited(a.insider().issuer(), lambda d, u, n: d.update(ak_certificate=_b64(stolen)))
            )
        )(a.copied()[2]),
        DENIED,
        ("ak.certificate.key",),
    ),
    "own-swtpm-certified-by-another-platform": (
        lambda a: a.join(
            a.insider(ca=PlatformCA.generate("constellation-mini platform CA")).issuer()
        ),
        DENIED,
        ("ak.certificate.chain",),
    ),
    "platform-certified-machine-booting-a-tampered-image": (
        lambda a: a.join(a.insider(image=a.tampered_image()).issuer()),
        DENIED,
        ("pcr[9]",),
    ),
    # -- the quote --------------------------------------------------------------------------
    "pcr-value-changed-after-quoting": (
        lambda a: a.join(
            Edited(
                a.insider().issuer(),
                lambda d, u, n: d["pcrs"].update({"4": _b64(b"\x44" * 32)}),
            )
        ),
        DENIED,
        ("quote.pcr_digest",),
    ),
    "pcr-dropped-from-the-document": (
        lambda a: a.join(Edited(a.insider().issuer(), lambda d, u, n: d["pcrs"].pop("23"))),
        DENIED,
        ("quote.selection",),
    ),
    "quote-signature-bit-flipped": (
        lambda a: a.join(
            Edited(
                a.insider().issuer(),
                lambda d, u, n: d["quotes"][0].update(
                    signature=_b64(_flip(base64.b64decode(d["quotes"][0]["signature"]), -3))
                ),
            )
        ),
        DENIED,
        ("quote.signature",),
    ),
    "quote-attest-bit-flipped": (
        lambda a: a.join(
            Edited(
                a.insider().issuer(),
                lambda d, u, n: d["quotes"][0].update(
                    attest=_b64(_flip(base64.b64decode(d["quotes"][0]["attest"]), 20))
                ),
            )
        ),
        DENIED,
        ("quote.signature",),
    ),
    "quote-over-another-nonce": (
        lambda a: a.join(_replaying(a.insider().issuer())),
        DENIED,
        ("quote.qualifying_data",),
    ),
    "instance-info-swapped-after-quoting": (
        lambda a: a.join(
            Edited(a.insider().issuer(), lambda d, u, n: d.update(instance_info=_b64(b"other")))
        ),
        DENIED,
        ("quote.qualifying_data",),
    ),
    "only-a-sha1-bank-quote": (
        lambda a: a.join(_sha1_only(a.forger())),
        DENIED,
        ("quote.bank",),
    ),
    "ak-public-swapped-for-another-key": (
        lambda a: a.join(
            Edited(
                a.insider().issuer(),
                lambda d, u, n: d.update(ak_public=_b64(SoftwareTpmIssuer({}).ak_public)),
            )
        ),
        DENIED,
        ("quote.signature", "ak.certificate.key"),
    ),
    # -- the event log ----------------------------------------------------------------------
    "event-log-removed": (
        lambda a: a.join(Edited(a.insider().issuer(), lambda d, u, n: d.update(event_log=None))),
        DENIED,
        ("eventlog.present",),
    ),
    "event-data-rewritten-digest-kept": (
        lambda a: a.join(Edited(a.insider().issuer(), _rewrite_first_event_data)),
        DENIED,
        ("eventlog.event[",),
    ),
    "made-up-event-for-pcr-16": (
        lambda a: a.join(Edited(a.insider().issuer(), _append_event(16))),
        DENIED,
        ("eventlog.replay[pcr16]",),
    ),
    "made-up-event-for-pcr-23": (
        lambda a: a.join(Edited(a.insider().issuer(), _append_event(23))),
        DENIED,
        ("eventlog.replay[pcr23]",),
    ),
    "made-up-event-for-pcr-15": (
        lambda a: a.join(Edited(a.insider().issuer(), _append_event(15))),
        DENIED,
        ("eventlog.replay[pcr15]",),
    ),
    "tampered-boot-with-its-event-cut-from-the-log": (
        lambda a: a.join(Edited(a.insider(image=a.tampered_image()).issuer(), _drop_event(9))),
        DENIED,
        ("pcr[9]",),
    ),
    # -- the document and the aTLS binding --------------------------------------------------
    "variant-relabelled": (
        lambda a: a.join(_relabelled(a.insider().issuer(), "azure-sev-snp")),
        DENIED,
        ("atls.variant",),
    ),
    "evidence-bound-to-another-tls-key": (
        _bound_to_other_key,
        DENIED,
        ("atls.user_data",),
    ),
    "verification-service-evidence-replayed-as-atls": (
        lambda a: _verification_evidence_as_atls(a),
        DENIED,
        ("quote.qualifying_data",),
    ),
    "document-not-json": (
        lambda a: _raw_evidence(a, b"{not json"),
        UNAUTHENTICATED,
        ("not valid JSON",),
    ),
    "document-nested-100k-deep": (
        lambda a: _raw_evidence(a, b"[" * 100_000 + b"]" * 100_000),
        UNAUTHENTICATED,
        ("nest",),
    ),
    "document-of-another-version": (
        lambda a: _raw_evidence(a, json.dumps({"version": 2}).encode()),
        UNAUTHENTICATED,
        ("version",),
    ),
    "pcr-index-superscript-two": (
        lambda a: a.join(
            Edited(a.insider().issuer(), lambda d, u, n: d["pcrs"].update({"²": _b64(bytes(32))}))
        ),
        UNAUTHENTICATED,
        ("PCR index",),
    ),
    "document-larger-than-the-atls-limit": (
        lambda a: _raw_evidence(a, b" " * (600 * 1024)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        (),
    ),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_forged_evidence_is_refused(attacker: Attacker, attack: str) -> None:
    how, code, checks = ATTACKS[attack]
    how(attacker).is_(code, *checks)


def test_the_worst_finding_a_software_tpm_gets_no_control_plane_files(attacker: Attacker) -> None:
    """Issue 10's full chain: no TPM, copied public PCRs and log, a control-plane request."""
    pcrs, log, certificate = attacker.copied("mini-cp-0")
    for ak_certificate in (None, certificate):
        forger = SoftwareTpmIssuer(
            pcrs, log, ak_certificate, key=ec.generate_private_key(ec.SECP256R1())
        )
        refusal = attacker.join(forger, attacker.request("mini-cp-9", control_plane=True))
        refusal.is_(DENIED)
        assert "ak.certificate" in refusal.details
