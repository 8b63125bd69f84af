"""Issue and validate vTPM evidence against a real swtpm; every check must be able to reject."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from constellation.attestation.errors import MalformedEvidenceError, ValidationError
from constellation.attestation.eventlog import Event, encode_event_log
from constellation.attestation.evidence import Issuer, Validator
from constellation.attestation.measurements import Measurements, pcr15_for_cluster_id
from constellation.attestation.nodelock import NodeLock
from constellation.attestation.swtpm import Swtpm, start_swtpm
from constellation.attestation.tpm import TPM_ALG_RSA, parse_tpmt_public
from constellation.attestation.vtpm import (
    TpmError,
    VtpmIssuer,
    VtpmValidator,
    firmware_measure,
    open_tpm,
    read_pcrs,
)

pytestmark = pytest.mark.swtpm

USER_DATA = hashlib.sha256(b"tls key spki").digest()
ZERO = bytes(32)


def nonce() -> bytes:
    return os.urandom(32)


def baseline(pcrs: dict[int, bytes], *indices: int) -> Measurements:
    return Measurements.from_dict({str(i): pcrs[i].hex() for i in indices})


def current_pcrs(tpm: Swtpm) -> dict[int, bytes]:
    with open_tpm(tpm.tcti) as esapi:
        return read_pcrs(esapi)[1]


def checks(exc: ValidationError) -> set[str]:
    return {f.check for f in exc.failures}


def edit(document: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    doc = json.loads(document)
    change(doc)
    return json.dumps(doc).encode()


def flip_b64(value: str, position: int) -> str:
    raw = bytearray(base64.b64decode(value))
    raw[position] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


@pytest.fixture
def measured(swtpm: Swtpm) -> tuple[Swtpm, bytes]:
    """A vTPM whose PCRs 4, 9, 11 were measured by the firmware step, with its event log."""
    log = b""
    for pcr, part in ((4, b"kernel"), (9, b"initrd"), (11, b"uki")):
        log = firmware_measure(swtpm.tcti, log, pcr, hashlib.sha256(part).digest(), part)
    return swtpm, log


def test_round_trip_returns_user_data(measured: tuple[Swtpm, bytes]) -> None:
    tpm, log = measured
    issuer = VtpmIssuer(tpm.tcti, event_log=log)
    pcrs = current_pcrs(tpm)
    validator = VtpmValidator(baseline(pcrs, 4, 9, 11).with_pcr15(None), require_event_log=True)
    assert isinstance(issuer, Issuer)
    assert isinstance(validator, Validator)
    n = nonce()
    document = issuer.issue(USER_DATA, n)
    verified = validator.verify(document, n)
    assert verified.user_data == USER_DATA
    assert verified.pcrs[4] == pcrs[4] != ZERO
    assert verified.warnings == ()
    assert verified.details["event_count"] == 3
    assert validator.validate(document, n) == USER_DATA


def test_node_lock_changes_pcr15_expectation(swtpm: Swtpm) -> None:
    issuer = VtpmIssuer(swtpm.tcti)
    base = baseline(current_pcrs(swtpm), 4)
    cluster_id = os.urandom(32)
    lock = NodeLock(swtpm.tcti)
    assert not lock.is_initialized()
    assert lock.try_lock(cluster_id)
    n = nonce()
    document = issuer.issue(USER_DATA, n)
    with pytest.raises(ValidationError) as rejected:
        VtpmValidator(base.with_pcr15(None)).verify(document, n)
    assert checks(rejected.value) == {"pcr[15]"}
    assert rejected.value.failures[0].actual == pcr15_for_cluster_id(cluster_id).hex()
    assert VtpmValidator(base.with_pcr15(cluster_id)).validate(document, n) == USER_DATA


def test_swapped_user_data_is_rejected(swtpm: Swtpm) -> None:
    n = nonce()
    document = VtpmIssuer(swtpm.tcti).issue(USER_DATA, n)
    other = base64.b64encode(hashlib.sha256(b"attacker key").digest()).decode()
    forged = edit(document, lambda d: d.update(user_data=other))
    with pytest.raises(ValidationError) as rejected:
        VtpmValidator(Measurements()).verify(forged, n)
    assert checks(rejected.value) == {"quote.qualifying_data"}


def test_swapped_instance_info_is_rejected(swtpm: Swtpm) -> None:
    n = nonce()
    document = VtpmIssuer(swtpm.tcti, instance_info=b'{"node":"a"}').issue(USER_DATA, n)
    VtpmValidator(Measurements()).verify(document, n)
    forged = edit(document, lambda d: d.update(instance_info=base64.b64encode(b"{}").decode()))
    with pytest.raises(ValidationError) as rejected:
        VtpmValidator(Measurements()).verify(forged, n)
    assert checks(rejected.value) == {"quote.qualifying_data"}


def test_wrong_nonce_is_rejected(swtpm: Swtpm) -> None:
    document = VtpmIssuer(swtpm.tcti).issue(USER_DATA, nonce())
    with pytest.raises(ValidationError) as rejected:
        VtpmValidator(Measurements()).verify(document, nonce())
    assert checks(rejected.value) == {"quote.qualifying_data"}


def test_ak_pinning(swtpm_factory: Callable[[int], list[Swtpm]]) -> None:
    trusted_tpm, other_tpm = swtpm_factory(2)
    trusted = parse_tpmt_public(VtpmIssuer(trusted_tpm.tcti).ak_public()).spki_der()
    validator = VtpmValidator(Measurements(), trusted_ak_keys={trusted})
    n = nonce()
    assert validator.validate(VtpmIssuer(trusted_tpm.tcti).issue(USER_DATA, n), n) == USER_DATA
    with pytest.raises(ValidationError) as rejected:
        validator.verify(VtpmIssuer(other_tpm.tcti).issue(USER_DATA, n), n)
    assert checks(rejected.value) == {"ak.trusted"}


def test_ak_swapped_for_another_tpm_fails_signature(
    swtpm_factory: Callable[[int], list[Swtpm]],
) -> None:
    first, second = swtpm_factory(2)
    n = nonce()
    document = VtpmIssuer(first.tcti).issue(USER_DATA, n)
    other_ak = base64.b64encode(VtpmIssuer(second.tcti).ak_public()).decode()
    forged = edit(document, lambda d: d.update(ak_public=other_ak))
    with pytest.raises(ValidationError) as rejected:
        VtpmValidator(Measurements()).verify(forged, n)
    assert checks(rejected.value) == {"quote.signature"}


def test_enforced_and_warn_only_mismatches(swtpm: Swtpm) -> None:
    n = nonce()
    document = VtpmIssuer(swtpm.tcti).issue(USER_DATA, n)
    wrong = b"\x11" * 32
    warn = Measurements.from_dict(
        {"4": {"expected": wrong.hex(), "warnOnly": True}, "9": {"expected": ZERO.hex()}}
    )
    verified = VtpmValidator(warn).verify(document, n)
    assert verified.user_data == USER_DATA
    assert [w.check for w in verified.warnings] == ["pcr[4]"]
    assert not verified.warnings[0].enforced

    enforced = warn.with_pcr(7, wrong).with_pcr(8, wrong)
    with pytest.raises(ValidationError) as rejected:
        VtpmValidator(enforced).verify(document, n)
    assert checks(rejected.value) == {"pcr[7]", "pcr[8]"}
    assert [w.check for w in rejected.value.warnings] == ["pcr[4]"]


def test_tampered_pcr_value_fails_digest(swtpm: Swtpm) -> None:
    n = nonce()
    document = VtpmIssuer(swtpm.tcti).issue(USER_DATA, n)
    fake = base64.b64encode(b"\x22" * 32).decode()
    forged = edit(document, lambda d: d["pcrs"].update({"4": fake}))
    expected = Measurements.from_dict({"4": (b"\x22" * 32).hex()})
    with pytest.raises(ValidationError) as rejected:
        VtpmValidator(expected).verify(forged, n)
    assert checks(rejected.value) == {"quote.pcr_digest"}


def test_dropped_pcr_fails_selection(swtpm: Swtpm) -> None:
    n = nonce()
    document = VtpmIssuer(swtpm.tcti).issue(USER_DATA, n)
    forged = edit(document, lambda d: d["pcrs"].pop("4"))
    with pytest.raises(ValidationError) as rejected:
        VtpmValidator(Measurements()).verify(forged, n)
    assert "quote.selection" in checks(rejected.value)


def test_tampered_quote_bytes_fail_signature(swtpm: Swtpm) -> None:
    n = nonce()
    document = VtpmIssuer(swtpm.tcti).issue(USER_DATA, n)
    # Byte 40 lies in qualifiedSigner: still parses, but is no longer what the TPM signed.
    forged = edit(
        document, lambda d: d["quotes"][0].update(attest=flip_b64(d["quotes"][0]["attest"], 40))
    )
    with pytest.raises(ValidationError) as rejected:
        VtpmValidator(Measurements()).verify(forged, n)
    assert checks(rejected.value) == {"quote.signature"}


def test_tampered_signature_fails(swtpm: Swtpm) -> None:
    n = nonce()
    document = VtpmIssuer(swtpm.tcti).issue(USER_DATA, n)
    forged = edit(
        document,
        lambda d: d["quotes"][0].update(signature=flip_b64(d["quotes"][0]["signature"], 10)),
    )
    with pytest.raises(ValidationError) as rejected:
        VtpmValidator(Measurements()).verify(forged, n)
    assert checks(rejected.value) == {"quote.signature"}


def test_document_with_only_a_sha1_quote_fails(swtpm: Swtpm) -> None:
    n = nonce()
    document = VtpmIssuer(swtpm.tcti, quote_banks=("sha1",)).issue(USER_DATA, n)
    with pytest.raises(ValidationError) as rejected:
        VtpmValidator(Measurements()).verify(document, n)
    assert checks(rejected.value) == {"quote.bank"}
    # With both banks quoted, the SHA-256 quote is the one verified.
    both = VtpmIssuer(swtpm.tcti, quote_banks=("sha1", "sha256")).issue(USER_DATA, n)
    assert VtpmValidator(Measurements()).validate(both, n) == USER_DATA


def test_event_log_that_does_not_replay_fails(measured: tuple[Swtpm, bytes]) -> None:
    tpm, _ = measured
    lying_log = encode_event_log([Event.measure(4, b"kernel"), Event.measure(9, b"evil initrd")])
    n = nonce()
    document = VtpmIssuer(tpm.tcti, event_log=lying_log).issue(USER_DATA, n)
    with pytest.raises(ValidationError) as rejected:
        VtpmValidator(Measurements()).verify(document, n)
    assert checks(rejected.value) == {"eventlog.replay[pcr9]", "eventlog.replay[pcr11]"}


def test_missing_or_empty_log_with_measured_pcrs(measured: tuple[Swtpm, bytes]) -> None:
    tpm, _ = measured
    n = nonce()
    without_log = VtpmIssuer(tpm.tcti).issue(USER_DATA, n)
    with pytest.raises(ValidationError) as rejected:
        VtpmValidator(Measurements(), require_event_log=True).verify(without_log, n)
    assert checks(rejected.value) == {"eventlog.present"}
    empty_log = VtpmIssuer(tpm.tcti, event_log=encode_event_log([])).issue(USER_DATA, n)
    with pytest.raises(ValidationError) as rejected:
        VtpmValidator(Measurements(), require_event_log=True).verify(empty_log, n)
    assert checks(rejected.value) == {
        "eventlog.replay[pcr4]",
        "eventlog.replay[pcr9]",
        "eventlog.replay[pcr11]",
    }


def test_wrong_variant_is_rejected(swtpm: Swtpm) -> None:
    n = nonce()
    document = VtpmIssuer(swtpm.tcti, variant="azure-sev-snp").issue(USER_DATA, n)
    with pytest.raises(ValidationError) as rejected:
        VtpmValidator(Measurements()).verify(document, n)
    assert checks(rejected.value) == {"document.variant"}


def test_all_failures_are_reported_together(swtpm: Swtpm) -> None:
    document = VtpmIssuer(swtpm.tcti).issue(USER_DATA, nonce())
    expected = Measurements.from_dict({"0": (b"\x01" * 32).hex(), "1": (b"\x02" * 32).hex()})
    with pytest.raises(ValidationError) as rejected:
        VtpmValidator(expected).verify(document, nonce())
    assert checks(rejected.value) == {"quote.qualifying_data", "pcr[0]", "pcr[1]"}


@pytest.mark.parametrize(
    "document",
    [
        b"",
        b"not json",
        b"[]",
        b'{"version": 2}',
        b'{"version": 1}',
        b'{"version": 1, "user_data": "!!", "instance_info": ""}',
    ],
)
def test_malformed_documents(document: bytes) -> None:
    with pytest.raises(MalformedEvidenceError):
        VtpmValidator(Measurements()).verify(document, nonce())


def test_malformed_fields_of_a_real_document(swtpm: Swtpm) -> None:
    n = nonce()
    document = VtpmIssuer(swtpm.tcti).issue(USER_DATA, n)
    mutations: list[Callable[[dict[str, Any]], None]] = [
        lambda d: d.update(ak_public=base64.b64encode(b"\x00\x23").decode()),
        lambda d: d.update(quotes=[]),
        lambda d: d.update(quotes=["x"]),
        lambda d: d["quotes"][0].update(attest=base64.b64encode(b"\xff\x54").decode()),
        lambda d: d["quotes"][0].update(signature="@@"),
        lambda d: d.update(pcrs={"24": d["pcrs"]["0"]}),
        lambda d: d.update(pcrs=[]),
        lambda d: d.update(event_log=base64.b64encode(b"\x00" * 10).decode()),
    ]
    for mutate in mutations:
        with pytest.raises(MalformedEvidenceError):
            VtpmValidator(Measurements()).verify(edit(document, mutate), n)


def test_unreachable_tpm_is_a_typed_error() -> None:
    with pytest.raises(TpmError):
        VtpmIssuer("swtpm:host=127.0.0.1,port=1").issue(USER_DATA, nonce())


def test_issuer_flushes_transient_objects(swtpm: Swtpm) -> None:
    from tpm2_pytss.constants import TPM2_CAP, TPM2_HT

    issuer = VtpmIssuer(swtpm.tcti)
    for _ in range(5):
        issuer.issue(USER_DATA, nonce())
    issuer.ak_public()
    with open_tpm(swtpm.tcti) as esapi:
        _, data = esapi.get_capability(TPM2_CAP.HANDLES, TPM2_HT.TRANSIENT << 24, 16)
        assert len(data.data.handles) == 0


def test_firmware_measure_rejects_bad_input(swtpm: Swtpm) -> None:
    with pytest.raises(TpmError):
        firmware_measure(swtpm.tcti, b"", 24, ZERO)
    with pytest.raises(TpmError):
        firmware_measure(swtpm.tcti, b"", 4, b"short")
    with pytest.raises(MalformedEvidenceError):
        firmware_measure(swtpm.tcti, b"garbage log", 4, ZERO)
    assert current_pcrs(swtpm)[4] == ZERO


def test_rsa_attestation_key(swtpm: Swtpm) -> None:
    issuer = VtpmIssuer(swtpm.tcti, ak_template="rsa2048:rsassa-sha256:null")
    n = nonce()
    document = issuer.issue(USER_DATA, n)
    ak = parse_tpmt_public(base64.b64decode(json.loads(document)["ak_public"]))
    assert ak.type == TPM_ALG_RSA
    assert VtpmValidator(Measurements()).validate(document, n) == USER_DATA
    forged = edit(
        document,
        lambda d: d["quotes"][0].update(signature=flip_b64(d["quotes"][0]["signature"], 20)),
    )
    with pytest.raises(ValidationError) as rejected:
        VtpmValidator(Measurements()).verify(forged, n)
    assert checks(rejected.value) == {"quote.signature"}


def test_ak_is_stable_across_a_restart_with_kept_state(tmp_path: Path) -> None:
    first = start_swtpm(tmp_path)
    try:
        ak_before = VtpmIssuer(first.tcti).ak_public()
        assert VtpmIssuer(first.tcti).ak_public() == ak_before
    finally:
        first.stop()
    second = start_swtpm(tmp_path)
    try:
        pinned = parse_tpmt_public(ak_before).spki_der()
        n = nonce()
        document = VtpmIssuer(second.tcti).issue(USER_DATA, n)
        assert VtpmValidator(Measurements(), trusted_ak_keys={pinned}).validate(document, n)
    finally:
        second.stop()


def test_concurrent_extends_never_yield_an_inconsistent_document(swtpm: Swtpm) -> None:
    import threading

    stop = threading.Event()

    def extend_pcr16() -> None:
        for _ in range(2000):
            if stop.is_set():
                return
            firmware_measure(swtpm.tcti, b"", 16, hashlib.sha256(b"noise").digest())

    noise = threading.Thread(target=extend_pcr16)
    noise.start()
    outcomes = []
    try:
        for _ in range(20):
            n = nonce()
            try:
                document = VtpmIssuer(swtpm.tcti).issue(USER_DATA, n)
            except TpmError as exc:
                outcomes.append(str(exc))
                continue
            assert VtpmValidator(Measurements()).validate(document, n) == USER_DATA
            outcomes.append("ok")
    finally:
        stop.set()
        noise.join(timeout=60)
    assert all(o == "ok" or "kept changing" in o for o in outcomes)
