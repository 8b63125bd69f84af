"""Fixtures of the VerificationService tests: PCR reading and a matching validator.

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


@pytest.fixture
def validator_for() -> Callable[[str], Any]:
    """A qemu-vtpm validator expecting exactly the current PCRs of a swtpm."""
    from constellation.attestation.measurements import Measurement, Measurements
    from constellation.attestation.vtpm import VtpmValidator

    def make(tcti: str) -> VtpmValidator:
        pcrs = current_pcrs(tcti)
        return VtpmValidator(Measurements({i: Measurement(v, False) for i, v in pcrs.items()}))

    return make
