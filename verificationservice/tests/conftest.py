"""Fixtures of the VerificationService tests: PCR reading, the platform's AK certificate, and a
matching validator (trusting the test platform CA of ``attestation.testing.platform``).

The command runs as a subprocess through the shared ``run_service`` fixture
(``constellation.attestation.testing.service_process``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest


def current_pcrs(tcti: str) -> dict[int, bytes]:
    """The PCRs the vTPM at ``tcti`` quotes now (from one issued document)."""
    from constellation.attestation.vtpm import VtpmIssuer

    document = json.loads(VtpmIssuer(tcti).issue(b"probe", b"\x00" * 32))
    return {int(i): base64.b64decode(v) for i, v in document["pcrs"].items()}


def ak_certificate(tcti: str, name: str = "mini-worker-0") -> bytes:
    """The test platform's certificate for the AK of the vTPM at ``tcti`` (provisioned now)."""
    from constellation.attestation.identity import Role
    from constellation.attestation.testing.platform import cached_platform_ca, provision_node

    return provision_node(tcti, cached_platform_ca(), name, Role.WORKER)


@pytest.fixture
def validator_for() -> Callable[[str], Any]:
    """A qemu-vtpm validator expecting exactly the current PCRs of a swtpm; these tests run
    the service without an event log, so none is demanded (the log tests demand one)."""
    from constellation.attestation.measurements import Measurement, Measurements
    from constellation.attestation.testing.platform import node_validator
    from constellation.attestation.vtpm import VtpmValidator

    def make(tcti: str) -> VtpmValidator:
        pcrs = current_pcrs(tcti)
        expected = Measurements({i: Measurement(v, False) for i, v in pcrs.items()})
        return node_validator(expected, require_event_log=False)

    return make
