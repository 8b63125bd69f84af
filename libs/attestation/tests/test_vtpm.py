"""Issue and validate vTPM evidence against a real swtpm; every check must be able to reject.

Nodes are provisioned as a platform would (``testing.platform``): the AK is persisted in the
swtpm and certified by the test platform CA, and validators trust that CA. The attacker of
issue 10 (a software key claiming TPM attributes, copied PCRs and event log) comes from
``testing.softtpm``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography import x509

from constellation.attestation.errors import MalformedEvidenceError, ValidationError
from constellation.attestation.eventlog import Event, encode_event_log
from constellation.attestation.evidence import Issuer, Validator
from constellation.attestation.identity import Role
from constellation.attestation.identity.ca import PlatformCA
from constellation.attestation.measurements import Measurements, pcr15_for_cluster_id
from constellation.attestation.nodelock import NodeLock
from constellation.attestation.swtpm import Swtpm, start_swtpm
from constellation.attestation.testing.modules import load_module
from constellation.attestation.testing.platform import (
    cached_platform_ca,
    measure_boot,
    node_issuer,
    node_validator,
    provision_node,
)
from constellation.attestation.testing.softtpm import SoftwareTpmIssuer, public_facts
from constellation.attestation.tpm import TPM_ALG_RSA, parse_tpmt_public
from constellation.attestation.vtpm import (
    AK_HANDLE,
    TpmError,
    VtpmIssuer,
    VtpmValidator,
    ak_spki_der,
    firmware_measure,
    open_tpm,
    provision_ak,
    read_pcrs,
)

pytestmark = pytest.mark.swtpm

USER_DATA = hashlib.sha256(b"tls key spki").digest()
ZERO = bytes(32)
EMPTY_LOG = encode_event_log([])
RSA_AK = "rsa2048:rsassa-sha256:null"


def _load_forge() -> ModuleType:
    """The identity tests' certificate forger (the test tree is no package)."""
    path = Path(__file__).resolve().parent / "identity" / "forge.py"
    return load_module("constellation_identity_tests_forge", path)


forge = _load_forge()


def nonce() -> bytes:
    return os.urandom(32)


def issuer(
    tpm: Swtpm, name: str = "worker-0", role: Role = Role.WORKER, **kwargs: Any
) -> VtpmIssuer:
    """A certified node's issuer; an (empty) event log unless the test gives one."""
    kwargs.setdefault("event_log", EMPTY_LOG)
    return node_issuer(tpm.tcti, name, role, **kwargs)


def validator(measurements: Measurements | None = None, **kwargs: Any) -> VtpmValidator:
    """A validator trusting the test platform CA."""
    return node_validator(measurements or Measurements(), **kwargs)


def baseline(pcrs: dict[int, bytes], *indices: int) -> Measurements:
    return Measurements.from_dict({str(i): pcrs[i].hex() for i in indices})


def current_pcrs(tpm: Swtpm) -> dict[int, bytes]:
    with open_tpm(tpm.tcti) as esapi:
        return read_pcrs(esapi)[1]


def handles(tpm: Swtpm, kind: int) -> list[int]:
    from tpm2_pytss.constants import TPM2_CAP

    with open_tpm(tpm.tcti) as esapi:
        _, data = esapi.get_capability(TPM2_CAP.HANDLES, kind << 24, 32)
        return list(data.data.handles)


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
    return swtpm, measure_boot(swtpm.tcti)


# --- the positive path -----------------------------------------------------------------------
def test_round_trip_returns_user_data_and_identity(measured: tuple[Swtpm, bytes]) -> None:
    tpm, log = measured
    node = issuer(tpm, "control-plane-0", Role.CONTROL_PLANE, event_log=log)
    pcrs = current_pcrs(tpm)
    checker = validator(baseline(pcrs, 4, 9, 11).with_pcr15(None))
    assert isinstance(node, Issuer)
    assert isinstance(checker, Validator)
    n = nonce()
    document = node.issue(USER_DATA, n)
    verified = checker.verify(document, n)
    assert verified.user_data == USER_DATA
    assert verified.pcrs[4] == pcrs[4] != ZERO
    assert verified.warnings == ()
    assert verified.details["event_count"] == 3
    assert verified.identity is not None
    assert verified.identity.name == "control-plane-0"
    assert verified.identity.role is Role.CONTROL_PLANE
    assert verified.identity.ak_sha256 == verified.details["ak_spki_sha256"]
    assert verified.identity.platform == cached_platform_ca().fingerprint
    assert checker.validate(document, n) == USER_DATA


def test_worker_identity_and_callable_certificate_source(swtpm: Swtpm) -> None:
    certificate = provision_node(swtpm.tcti, cached_platform_ca(), "worker-7", Role.WORKER)
    node = VtpmIssuer(swtpm.tcti, event_log=EMPTY_LOG, ak_certificate=lambda: certificate)
    n = nonce()
    identity = validator().verify(node.issue(USER_DATA, n), n).identity
    assert identity is not None
    assert (identity.name, identity.role) == ("worker-7", Role.WORKER)


def test_rsa_attestation_key(swtpm: Swtpm) -> None:
    node = issuer(swtpm, ak_template=RSA_AK)
    n = nonce()
    document = node.issue(USER_DATA, n)
    ak = parse_tpmt_public(base64.b64decode(json.loads(document)["ak_public"]))
    assert ak.type == TPM_ALG_RSA
    assert validator().validate(document, n) == USER_DATA
    forged = edit(
        document,
        lambda d: d["quotes"][0].update(signature=flip_b64(d["quotes"][0]["signature"], 20)),
    )
    with pytest.raises(ValidationError) as rejected:
        validator().verify(forged, n)
    assert checks(rejected.value) == {"quote.signature"}


# --- rooting the AK: fail closed -------------------------------------------------------------
def test_a_validator_without_any_root_refuses_every_document(swtpm: Swtpm) -> None:
    n = nonce()
    document = issuer(swtpm).issue(USER_DATA, n)
    for unrooted in (
        VtpmValidator(Measurements()),
        VtpmValidator(Measurements(), platform_roots=()),
    ):
        with pytest.raises(ValidationError) as rejected:
            unrooted.verify(document, n)
        assert checks(rejected.value) == {"ak.root"}
        (failure,) = rejected.value.failures
        assert failure.actual == "no platform root configured"


def test_rooted_elsewhere_needs_no_certificate(swtpm: Swtpm) -> None:
    """What the SEV-SNP wrappers rely on: their report roots the AK; no identity is claimed."""
    n = nonce()
    document = VtpmIssuer(swtpm.tcti, event_log=EMPTY_LOG).issue(USER_DATA, n)
    verified = VtpmValidator(Measurements(), ak_rooted_elsewhere=True).verify(document, n)
    assert verified.identity is None


def test_document_without_an_ak_certificate_is_refused(swtpm: Swtpm) -> None:
    n = nonce()
    document = VtpmIssuer(swtpm.tcti, event_log=EMPTY_LOG).issue(USER_DATA, n)
    assert json.loads(document)["ak_certificate"] is None
    with pytest.raises(ValidationError) as rejected:
        validator().verify(document, n)
    assert checks(rejected.value) == {"ak.certificate"}


def test_software_key_with_copied_evidence_is_refused(measured: tuple[Swtpm, bytes]) -> None:
    """Issue 10's attacker: a software AK claiming TPM attributes, the genuine node's PCRs and
    event log, a quote it signs itself. Everything but the AK's root checks out."""
    tpm, log = measured
    n = nonce()
    genuine = issuer(tpm, event_log=log).issue(USER_DATA, n)
    pcrs, copied_log, genuine_certificate = public_facts(genuine)
    expected = baseline(pcrs, 4, 9, 11)
    assert validator(expected).validate(genuine, n) == USER_DATA

    attacker = SoftwareTpmIssuer(pcrs=pcrs, event_log=copied_log)
    forged = attacker.issue(USER_DATA, n)
    # Without a root, nothing would tell it from the genuine node:
    assert VtpmValidator(expected, ak_rooted_elsewhere=True).validate(forged, n) == USER_DATA
    with pytest.raises(ValidationError) as rejected:
        validator(expected).verify(forged, n)
    assert checks(rejected.value) == {"ak.certificate"}

    attacker.ak_certificate = genuine_certificate
    with pytest.raises(ValidationError) as rejected:
        validator(expected).verify(attacker.issue(USER_DATA, n), n)
    assert checks(rejected.value) == {"ak.certificate.key"}

    own_ca = PlatformCA.generate(cached_platform_ca().certificate.subject.rfc4514_string())
    attacker.ak_certificate = own_ca.issue_ak_certificate(
        attacker.ak_spki_der, "control-plane-0", Role.CONTROL_PLANE
    )
    with pytest.raises(ValidationError) as rejected:
        validator(expected).verify(attacker.issue(USER_DATA, n), n)
    assert checks(rejected.value) == {"ak.certificate.chain"}


def test_genuine_certificate_of_another_ak(swtpm_factory: Callable[[int], list[Swtpm]]) -> None:
    node, other = swtpm_factory(2)
    others_certificate = provision_node(other.tcti, cached_platform_ca(), "worker-1", Role.WORKER)
    provision_ak(node.tcti)
    n = nonce()
    document = VtpmIssuer(node.tcti, event_log=EMPTY_LOG, ak_certificate=others_certificate).issue(
        USER_DATA, n
    )
    with pytest.raises(ValidationError) as rejected:
        validator().verify(document, n)
    assert checks(rejected.value) == {"ak.certificate.key"}


def test_certificate_from_another_platform(swtpm: Swtpm) -> None:
    n = nonce()
    document = issuer(swtpm, ca=PlatformCA.generate()).issue(USER_DATA, n)
    with pytest.raises(ValidationError) as rejected:
        validator().verify(document, n)
    assert checks(rejected.value) == {"ak.certificate.chain"}
    other = PlatformCA.generate()
    assert validator(ca=other).validate(issuer(swtpm, ca=other).issue(USER_DATA, n), n)


def test_certificate_outside_its_validity(swtpm: Swtpm) -> None:
    n = nonce()
    document = issuer(swtpm).issue(USER_DATA, n)
    now = datetime.now(UTC)
    for at in (now + timedelta(days=3650 * 2), now - timedelta(days=1)):
        with pytest.raises(ValidationError) as rejected:
            validator(clock=lambda at=at: at).verify(document, n)
        assert checks(rejected.value) == {"ak.certificate.validity"}


@pytest.mark.parametrize(
    ("changes", "check"),
    [
        ({"ca_flag": True}, "ak.certificate.usage"),
        ({"eku": None}, "ak.certificate.usage"),
        ({"role": None}, "ak.certificate.identity"),
        ({"names": ("Not A Label",)}, "ak.certificate.identity"),
    ],
    ids=["ca-true", "no-eku", "no-role", "bad-name"],
)
def test_certificate_outside_the_profile(swtpm: Swtpm, changes: dict[str, Any], check: str) -> None:
    ak = parse_tpmt_public(provision_ak(swtpm.tcti))
    now = datetime.now(UTC)
    certificate = forge.ak_certificate(
        cached_platform_ca(),
        _PublicOnly(ak.public_key),
        not_before=now - timedelta(minutes=5),
        not_after=now + timedelta(days=1),
        **changes,
    )
    n = nonce()
    document = VtpmIssuer(swtpm.tcti, event_log=EMPTY_LOG, ak_certificate=certificate).issue(
        USER_DATA, n
    )
    with pytest.raises(ValidationError) as rejected:
        validator().verify(document, n)
    assert checks(rejected.value) == {check}


class _PublicOnly:
    """Gives ``forge.ak_certificate`` the TPM-resident AK's public half (it only needs that)."""

    def __init__(self, public_key: Any) -> None:
        self._public_key = public_key

    def public_key(self) -> Any:
        return self._public_key


def test_pin_and_platform_root_both_apply(swtpm_factory: Callable[[int], list[Swtpm]]) -> None:
    node, other = swtpm_factory(2)
    pinned = ak_spki_der(provision_ak(other.tcti))
    n = nonce()
    document = issuer(node).issue(USER_DATA, n)
    with pytest.raises(ValidationError) as rejected:
        validator(trusted_ak_keys={pinned}).verify(document, n)
    assert checks(rejected.value) == {"ak.trusted"}


def test_ak_pinning(swtpm_factory: Callable[[int], list[Swtpm]]) -> None:
    trusted_tpm, other_tpm = swtpm_factory(2)
    trusted = parse_tpmt_public(VtpmIssuer(trusted_tpm.tcti).ak_public()).spki_der()
    checker = VtpmValidator(Measurements(), trusted_ak_keys={trusted})
    n = nonce()
    document = VtpmIssuer(trusted_tpm.tcti, event_log=EMPTY_LOG).issue(USER_DATA, n)
    assert checker.validate(document, n) == USER_DATA
    assert checker.verify(document, n).identity is None
    with pytest.raises(ValidationError) as rejected:
        checker.verify(VtpmIssuer(other_tpm.tcti, event_log=EMPTY_LOG).issue(USER_DATA, n), n)
    assert checks(rejected.value) == {"ak.trusted"}


def test_ak_swapped_for_another_tpm_fails_signature_and_certificate(
    swtpm_factory: Callable[[int], list[Swtpm]],
) -> None:
    first, second = swtpm_factory(2)
    n = nonce()
    document = issuer(first).issue(USER_DATA, n)
    other_ak = base64.b64encode(VtpmIssuer(second.tcti).ak_public()).decode()
    forged = edit(document, lambda d: d.update(ak_public=other_ak))
    with pytest.raises(ValidationError) as rejected:
        validator().verify(forged, n)
    assert checks(rejected.value) == {"quote.signature", "ak.certificate.key"}


# --- the persistent AK -----------------------------------------------------------------------
def test_ak_is_persistent_and_no_transient_object_leaks(swtpm: Swtpm) -> None:
    from tpm2_pytss.constants import TPM2_HT

    assert handles(swtpm, TPM2_HT.PERSISTENT) == []
    public = provision_ak(swtpm.tcti)
    assert provision_ak(swtpm.tcti) == public  # idempotent
    node = VtpmIssuer(swtpm.tcti, event_log=EMPTY_LOG)
    first = json.loads(node.issue(USER_DATA, nonce()))
    second = json.loads(node.issue(USER_DATA, nonce()))
    assert base64.b64decode(first["ak_public"]) == public
    assert first["ak_public"] == second["ak_public"]
    assert node.ak_public() == public
    assert handles(swtpm, TPM2_HT.PERSISTENT) == [AK_HANDLE]
    assert handles(swtpm, TPM2_HT.TRANSIENT) == []


def test_first_quote_provisions_the_ak(swtpm: Swtpm) -> None:
    from tpm2_pytss.constants import TPM2_HT

    document = VtpmIssuer(swtpm.tcti).issue(USER_DATA, nonce())
    assert handles(swtpm, TPM2_HT.PERSISTENT) == [AK_HANDLE]
    assert handles(swtpm, TPM2_HT.TRANSIENT) == []
    assert base64.b64decode(json.loads(document)["ak_public"]) == provision_ak(swtpm.tcti)


def test_issuer_flushes_transient_objects(swtpm: Swtpm) -> None:
    from tpm2_pytss.constants import TPM2_HT

    node = VtpmIssuer(swtpm.tcti)
    for _ in range(5):
        node.issue(USER_DATA, nonce())
    node.ak_public()
    assert handles(swtpm, TPM2_HT.TRANSIENT) == []


def test_a_different_key_at_the_ak_handle_is_refused(swtpm: Swtpm) -> None:
    from tpm2_pytss.constants import TPM2_HT

    provision_ak(swtpm.tcti, RSA_AK)
    with pytest.raises(TpmError, match="holds a key other than an AK"):
        VtpmIssuer(swtpm.tcti).issue(USER_DATA, nonce())
    with pytest.raises(TpmError, match="holds a key other than an AK"):
        provision_ak(swtpm.tcti)
    assert handles(swtpm, TPM2_HT.TRANSIENT) == []
    # Another handle holds another AK.
    assert provision_ak(swtpm.tcti, handle=AK_HANDLE + 1) != provision_ak(swtpm.tcti, RSA_AK)


def test_ak_handle_outside_the_owner_persistent_range_is_refused(swtpm: Swtpm) -> None:
    with pytest.raises(TpmError, match="not an owner persistent handle"):
        VtpmIssuer(swtpm.tcti, ak_handle=0x80000001).ak_public()
    with pytest.raises(TpmError, match="not an owner persistent handle"):
        provision_ak(swtpm.tcti, handle=0x81800000)


def test_ak_and_its_certificate_survive_a_restart_with_kept_state(tmp_path: Path) -> None:
    first = start_swtpm(tmp_path)
    try:
        certificate = provision_node(first.tcti, cached_platform_ca(), "worker-0", Role.WORKER)
        ak_before = VtpmIssuer(first.tcti).ak_public()
    finally:
        first.stop()
    second = start_swtpm(tmp_path)
    try:
        node = VtpmIssuer(second.tcti, event_log=EMPTY_LOG, ak_certificate=certificate)
        assert node.ak_public() == ak_before
        pinned = parse_tpmt_public(ak_before).spki_der()
        n = nonce()
        document = node.issue(USER_DATA, n)
        assert validator(trusted_ak_keys={pinned}).validate(document, n) == USER_DATA
    finally:
        second.stop()


# --- binding, quote and PCR checks -----------------------------------------------------------
def test_node_lock_changes_pcr15_expectation(swtpm: Swtpm) -> None:
    node = issuer(swtpm)
    base = baseline(current_pcrs(swtpm), 4)
    cluster_id = os.urandom(32)
    lock = NodeLock(swtpm.tcti)
    assert not lock.is_initialized()
    assert lock.try_lock(cluster_id)
    n = nonce()
    document = node.issue(USER_DATA, n)
    with pytest.raises(ValidationError) as rejected:
        validator(base.with_pcr15(None)).verify(document, n)
    assert checks(rejected.value) == {"pcr[15]"}
    assert rejected.value.failures[0].actual == pcr15_for_cluster_id(cluster_id).hex()
    assert validator(base.with_pcr15(cluster_id)).validate(document, n) == USER_DATA


def test_swapped_user_data_is_rejected(swtpm: Swtpm) -> None:
    n = nonce()
    document = issuer(swtpm).issue(USER_DATA, n)
    other = base64.b64encode(hashlib.sha256(b"attacker key").digest()).decode()
    forged = edit(document, lambda d: d.update(user_data=other))
    with pytest.raises(ValidationError) as rejected:
        validator().verify(forged, n)
    assert checks(rejected.value) == {"quote.qualifying_data"}


def test_swapped_instance_info_is_rejected(swtpm: Swtpm) -> None:
    n = nonce()
    document = issuer(swtpm, instance_info=b'{"node":"a"}').issue(USER_DATA, n)
    validator().verify(document, n)
    forged = edit(document, lambda d: d.update(instance_info=base64.b64encode(b"{}").decode()))
    with pytest.raises(ValidationError) as rejected:
        validator().verify(forged, n)
    assert checks(rejected.value) == {"quote.qualifying_data"}


def test_wrong_nonce_is_rejected(swtpm: Swtpm) -> None:
    document = issuer(swtpm).issue(USER_DATA, nonce())
    with pytest.raises(ValidationError) as rejected:
        validator().verify(document, nonce())
    assert checks(rejected.value) == {"quote.qualifying_data"}


def test_enforced_and_warn_only_mismatches(swtpm: Swtpm) -> None:
    n = nonce()
    document = issuer(swtpm).issue(USER_DATA, n)
    wrong = b"\x11" * 32
    warn = Measurements.from_dict(
        {"4": {"expected": wrong.hex(), "warnOnly": True}, "9": {"expected": ZERO.hex()}}
    )
    verified = validator(warn).verify(document, n)
    assert verified.user_data == USER_DATA
    assert [w.check for w in verified.warnings] == ["pcr[4]"]
    assert not verified.warnings[0].enforced

    enforced = warn.with_pcr(7, wrong).with_pcr(8, wrong)
    with pytest.raises(ValidationError) as rejected:
        validator(enforced).verify(document, n)
    assert checks(rejected.value) == {"pcr[7]", "pcr[8]"}
    assert [w.check for w in rejected.value.warnings] == ["pcr[4]"]


def test_tampered_pcr_value_fails_digest(swtpm: Swtpm) -> None:
    n = nonce()
    document = issuer(swtpm).issue(USER_DATA, n)
    fake = base64.b64encode(b"\x22" * 32).decode()
    forged = edit(document, lambda d: d["pcrs"].update({"4": fake}))
    expected = Measurements.from_dict({"4": (b"\x22" * 32).hex()})
    with pytest.raises(ValidationError) as rejected:
        validator(expected).verify(forged, n)
    assert checks(rejected.value) == {"quote.pcr_digest"}


def test_dropped_pcr_fails_selection(swtpm: Swtpm) -> None:
    n = nonce()
    document = issuer(swtpm).issue(USER_DATA, n)
    forged = edit(document, lambda d: d["pcrs"].pop("4"))
    with pytest.raises(ValidationError) as rejected:
        validator().verify(forged, n)
    assert "quote.selection" in checks(rejected.value)


def test_tampered_quote_bytes_fail_signature(swtpm: Swtpm) -> None:
    n = nonce()
    document = issuer(swtpm).issue(USER_DATA, n)
    # Byte 40 lies in qualifiedSigner: still parses, but is no longer what the TPM signed.
    forged = edit(
        document, lambda d: d["quotes"][0].update(attest=flip_b64(d["quotes"][0]["attest"], 40))
    )
    with pytest.raises(ValidationError) as rejected:
        validator().verify(forged, n)
    assert checks(rejected.value) == {"quote.signature"}


def test_tampered_signature_fails(swtpm: Swtpm) -> None:
    n = nonce()
    document = issuer(swtpm).issue(USER_DATA, n)
    forged = edit(
        document,
        lambda d: d["quotes"][0].update(signature=flip_b64(d["quotes"][0]["signature"], 10)),
    )
    with pytest.raises(ValidationError) as rejected:
        validator().verify(forged, n)
    assert checks(rejected.value) == {"quote.signature"}


def test_document_with_only_a_sha1_quote_fails(swtpm: Swtpm) -> None:
    n = nonce()
    document = issuer(swtpm, quote_banks=("sha1",)).issue(USER_DATA, n)
    with pytest.raises(ValidationError) as rejected:
        validator().verify(document, n)
    assert checks(rejected.value) == {"quote.bank"}
    # With both banks quoted, the SHA-256 quote is the one verified.
    both = issuer(swtpm, quote_banks=("sha1", "sha256")).issue(USER_DATA, n)
    assert validator().validate(both, n) == USER_DATA


# --- the event log ---------------------------------------------------------------------------
def test_event_log_that_does_not_replay_fails(measured: tuple[Swtpm, bytes]) -> None:
    tpm, _ = measured
    lying_log = encode_event_log([Event.measure(4, b"kernel"), Event.measure(9, b"evil initrd")])
    n = nonce()
    document = issuer(tpm, event_log=lying_log).issue(USER_DATA, n)
    with pytest.raises(ValidationError) as rejected:
        validator().verify(document, n)
    # PCR 11 is measured but not named by the lying log: replay leaves it to the measurements.
    assert checks(rejected.value) == {"eventlog.replay[pcr9]"}


def test_an_event_log_is_required_by_default(measured: tuple[Swtpm, bytes]) -> None:
    tpm, _ = measured
    n = nonce()
    without_log = issuer(tpm, event_log=None).issue(USER_DATA, n)
    with pytest.raises(ValidationError) as rejected:
        validator().verify(without_log, n)
    assert checks(rejected.value) == {"eventlog.present"}
    assert validator(require_event_log=False).validate(without_log, n) == USER_DATA


def test_empty_log_with_measured_pcrs(measured: tuple[Swtpm, bytes]) -> None:
    tpm, _ = measured
    n = nonce()
    # An empty log claims nothing, so replay compares nothing: the measurements judge the PCRs.
    empty_log = issuer(tpm, event_log=EMPTY_LOG).issue(USER_DATA, n)
    unmeasured = Measurements.from_dict({str(i): ZERO.hex() for i in (4, 9, 11)})
    with pytest.raises(ValidationError) as rejected:
        validator(unmeasured).verify(empty_log, n)
    assert checks(rejected.value) == {"pcr[4]", "pcr[9]", "pcr[11]"}


# --- documents -------------------------------------------------------------------------------
def test_wrong_variant_is_rejected(swtpm: Swtpm) -> None:
    n = nonce()
    document = issuer(swtpm, variant="azure-sev-snp").issue(USER_DATA, n)
    with pytest.raises(ValidationError) as rejected:
        validator().verify(document, n)
    assert checks(rejected.value) == {"document.variant"}


def test_all_failures_are_reported_together(swtpm: Swtpm) -> None:
    document = VtpmIssuer(swtpm.tcti).issue(USER_DATA, nonce())
    expected = Measurements.from_dict({"0": (b"\x01" * 32).hex(), "1": (b"\x02" * 32).hex()})
    with pytest.raises(ValidationError) as rejected:
        validator(expected).verify(document, nonce())
    assert checks(rejected.value) == {
        "quote.qualifying_data",
        "pcr[0]",
        "pcr[1]",
        "ak.certificate",
        "eventlog.present",
    }


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
        validator().verify(document, nonce())


def test_malformed_fields_of_a_real_document(swtpm: Swtpm) -> None:
    n = nonce()
    document = issuer(swtpm).issue(USER_DATA, n)
    mutations: list[Callable[[dict[str, Any]], None]] = [
        lambda d: d.update(ak_public=base64.b64encode(b"\x00\x23").decode()),
        lambda d: d.update(ak_certificate=5),
        lambda d: d.update(ak_certificate="@@"),
        lambda d: d.update(quotes=[]),
        lambda d: d.update(quotes=["x"]),
        lambda d: d["quotes"][0].update(attest=base64.b64encode(b"\xff\x54").decode()),
        lambda d: d["quotes"][0].update(signature="@@"),
        lambda d: d.update(pcrs={"24": d["pcrs"]["0"]}),
        lambda d: d.update(pcrs={"\u00b2": d["pcrs"]["0"]}),  # "²".isdigit(), int() refuses
        lambda d: d.update(pcrs={"\u0663": d["pcrs"]["0"]}),  # Arabic-Indic three
        lambda d: d.update(pcrs=[]),
        lambda d: d.update(event_log=base64.b64encode(b"\x00" * 10).decode()),
    ]
    for mutate in mutations:
        with pytest.raises(MalformedEvidenceError):
            validator().verify(edit(document, mutate), n)


def test_garbage_ak_certificate_is_a_failure(swtpm: Swtpm) -> None:
    n = nonce()
    document = issuer(swtpm).issue(USER_DATA, n)
    for garbage in (b"\x30\x03\x02\x01\x00", b"x" * 20000):
        doc = json.loads(document)
        doc["ak_certificate"] = base64.b64encode(garbage).decode()
        with pytest.raises(ValidationError) as rejected:
            validator().verify(json.dumps(doc).encode(), n)
        assert checks(rejected.value) == {"ak.certificate"}


def test_platform_roots_must_be_certificates() -> None:
    with pytest.raises(TypeError, match=r"x509\.Certificate"):
        VtpmValidator(Measurements(), platform_roots=[b"pem"])  # type: ignore[list-item]
    roots = (cached_platform_ca().certificate,)
    assert VtpmValidator(Measurements(), platform_roots=roots).platform_roots == roots
    assert isinstance(roots[0], x509.Certificate)


# --- the TPM side ----------------------------------------------------------------------------
def test_unreachable_tpm_is_a_typed_error() -> None:
    with pytest.raises(TpmError):
        VtpmIssuer("swtpm:path=/nonexistent/sock").issue(USER_DATA, nonce())


def test_firmware_measure_rejects_bad_input(swtpm: Swtpm) -> None:
    with pytest.raises(TpmError):
        firmware_measure(swtpm.tcti, b"", 24, ZERO)
    with pytest.raises(TpmError):
        firmware_measure(swtpm.tcti, b"", 4, b"short")
    with pytest.raises(MalformedEvidenceError):
        firmware_measure(swtpm.tcti, b"garbage log", 4, ZERO)
    assert current_pcrs(swtpm)[4] == ZERO


def test_concurrent_extends_never_yield_an_inconsistent_document(swtpm: Swtpm) -> None:
    import threading

    stop = threading.Event()

    def extend_pcr16() -> None:
        for _ in range(2000):
            if stop.is_set():
                return
            firmware_measure(swtpm.tcti, b"", 16, hashlib.sha256(b"noise").digest())

    node = issuer(swtpm)
    noise = threading.Thread(target=extend_pcr16)
    noise.start()
    outcomes = []
    try:
        for _ in range(20):
            n = nonce()
            try:
                document = node.issue(USER_DATA, n)
            except TpmError as exc:
                outcomes.append(str(exc))
                continue
            assert validator().validate(document, n) == USER_DATA
            outcomes.append("ok")
    finally:
        stop.set()
        noise.join(timeout=60)
    assert all(o == "ok" or "kept changing" in o for o in outcomes)
