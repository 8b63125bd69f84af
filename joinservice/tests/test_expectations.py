"""Join vs. rejoin expectations against real swtpm evidence: every state check must reject."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence

import pytest
import structlog.testing
from cryptography import x509

from constellation.attestation.errors import ValidationError
from constellation.attestation.kdf import derive_cluster_id
from constellation.attestation.measurements import Measurements, pcr15_for_cluster_id
from constellation.attestation.nodelock import NodeLock
from constellation.attestation.secret import SecretBytes
from constellation.attestation.service import ServiceMetrics
from constellation.attestation.testing.platform import cached_platform_ca
from constellation.attestation.vtpm import VtpmValidator
from constellation.joinservice.errors import RefusedError
from constellation.joinservice.expectations import (
    EXPECTATION_DETAIL,
    Expectation,
    Expectations,
    PeerValidator,
    build_expectations,
    require,
)
from constellation.joinservice.joinconfig import parse_join_config

from .conftest import IMAGE, Node, image_measurements

pytestmark = pytest.mark.swtpm

SALT = bytes(range(32))
SECRET = SecretBytes(hashlib.sha256(b"measurement secret of the test cluster").digest())
USER_DATA = hashlib.sha256(b"client tls spki").digest()


def factory(
    variant: str, measurements: Measurements, roots: Sequence[x509.Certificate]
) -> VtpmValidator:
    return VtpmValidator(measurements, variant=variant, platform_roots=roots)


def expectations_for(node: Node) -> Expectations:
    config = parse_join_config(
        b"qemu-vtpm",
        image_measurements(node).to_json().encode(),
        SALT,
        cached_platform_ca().cert_pem,
    )
    return build_expectations(config, SECRET, factory)


def cluster_id() -> bytes:
    return derive_cluster_id(SECRET.reveal(), SALT)


def timed(metrics: ServiceMetrics) -> float:
    count = metrics.registry.get_sample_value(
        "constellation_attestation_seconds_count",
        {"service": "joinservice", "operation": "validate"},
    )
    return count or 0.0


def failed(exc: ValidationError | RefusedError) -> set[str]:
    return {f.check for f in exc.failures}


def test_fresh_node_attests_as_join(make_nodes: Callable[..., list[Node]]) -> None:
    (node,) = make_nodes(1)
    expectations = expectations_for(node)
    metrics = ServiceMetrics("joinservice")
    validator = PeerValidator(lambda: expectations, timer=metrics.time_attestation)
    nonce = os.urandom(32)
    evidence = validator.verify(node.issuer.issue(USER_DATA, nonce), nonce)
    assert evidence.details[EXPECTATION_DETAIL] == "join"
    assert evidence.user_data == USER_DATA
    assert timed(metrics) == 1
    require(evidence, Expectation.JOIN, expectations)
    with pytest.raises(RefusedError) as info:
        require(evidence, Expectation.REJOIN, expectations)
    assert failed(info.value) == {"node_state", "pcr[15]"}


def test_locked_node_attests_as_rejoin(make_nodes: Callable[..., list[Node]]) -> None:
    (node,) = make_nodes(1)
    expectations = expectations_for(node)
    assert NodeLock(node.tpm.tcti).try_lock(cluster_id())
    assert expectations.cluster_pcr15 == pcr15_for_cluster_id(cluster_id())
    validator = PeerValidator(lambda: expectations)
    nonce = os.urandom(32)
    evidence = validator.verify(node.issuer.issue(USER_DATA, nonce), nonce)
    assert evidence.details[EXPECTATION_DETAIL] == "rejoin"
    require(evidence, Expectation.REJOIN, expectations)
    # A node that committed to the cluster never gets a fresh join ticket.
    with pytest.raises(RefusedError) as info:
        require(evidence, Expectation.JOIN, expectations)
    assert failed(info.value) == {"node_state", "pcr[15]"}


def test_node_locked_to_another_cluster_is_refused(make_nodes: Callable[..., list[Node]]) -> None:
    (node,) = make_nodes(1)
    expectations = expectations_for(node)
    assert NodeLock(node.tpm.tcti).try_lock(b"some other cluster's id, 32 byte")
    metrics = ServiceMetrics("joinservice")
    validator = PeerValidator(lambda: expectations, timer=metrics.time_attestation)
    nonce = os.urandom(32)
    with structlog.testing.capture_logs() as logs, pytest.raises(ValidationError) as info:
        validator.verify(node.issuer.issue(USER_DATA, nonce), nonce)
    # Only PCR 15 is wrong, and the report says so against the join expectation (zero).
    assert failed(info.value) == {"pcr[15]"}
    assert info.value.failures[0].expected == "00" * 32
    assert timed(metrics) == 1
    (refusal,) = [entry for entry in logs if entry["event"] == "join.refused"]
    assert refusal["stage"] == "attestation"
    assert [f["check"] for f in refusal["failures"]] == ["pcr[15]"]


def test_one_wrong_pcr_is_named(make_nodes: Callable[..., list[Node]]) -> None:
    good, bad = make_nodes(2, IMAGE)
    # Re-measure "bad" from a tampered initrd: PCR 9 differs, nothing else.
    expectations = expectations_for(good)
    tampered = make_nodes(1, (IMAGE[0], b"tampered initrd", IMAGE[2]))[0]
    validator = PeerValidator(lambda: expectations)
    nonce = os.urandom(32)
    with pytest.raises(ValidationError) as info:
        validator.verify(tampered.issuer.issue(USER_DATA, nonce), nonce)
    assert failed(info.value) == {"pcr[9]"}
    nonce = os.urandom(32)
    assert validator.verify(bad.issuer.issue(USER_DATA, nonce), nonce).user_data == USER_DATA


def test_evidence_for_another_nonce_is_refused(make_nodes: Callable[..., list[Node]]) -> None:
    (node,) = make_nodes(1)
    expectations = expectations_for(node)
    validator = PeerValidator(lambda: expectations)
    document = node.issuer.issue(USER_DATA, os.urandom(32))
    with pytest.raises(ValidationError) as info:
        validator.verify(document, os.urandom(32))
    assert failed(info.value) == {"quote.qualifying_data"}


def test_require_checks_pcr15_even_with_a_forged_tag(make_nodes: Callable[..., list[Node]]) -> None:
    import dataclasses

    (node,) = make_nodes(1)
    expectations = expectations_for(node)
    assert NodeLock(node.tpm.tcti).try_lock(cluster_id())
    nonce = os.urandom(32)
    evidence = PeerValidator(lambda: expectations).verify(
        node.issuer.issue(USER_DATA, nonce), nonce
    )
    forged = dataclasses.replace(evidence, details={**evidence.details, EXPECTATION_DETAIL: "join"})
    with pytest.raises(RefusedError) as info:
        require(forged, Expectation.JOIN, expectations)
    assert failed(info.value) == {"pcr[15]"}
