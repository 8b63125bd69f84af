"""Fixtures of the identity tests: platform CAs, AK keys and the ``forge`` module.

``forge`` is loaded by path because the test tree is not a package (pytest runs with
``--import-mode=importlib``); tests reach it through the ``forge`` fixture.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import ModuleType

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from constellation.attestation.identity.ca import PlatformCA
from constellation.attestation.testing.modules import load_module

_HERE = Path(__file__).resolve().parent


def load_forge() -> ModuleType:
    return load_module("constellation_identity_tests_forge", _HERE / "forge.py")


@pytest.fixture(scope="session")
def forge() -> ModuleType:
    return load_forge()


@pytest.fixture(scope="session")
def platform(forge: ModuleType) -> PlatformCA:
    """The trusted platform CA, valid around ``forge.NOW``."""
    return PlatformCA.generate("test platform", not_before=forge.NOW - timedelta(days=30))


@pytest.fixture(scope="session")
def other_platform(forge: ModuleType) -> PlatformCA:
    """An unrelated CA with the same subject name: an impostor platform."""
    return PlatformCA.generate("test platform", not_before=forge.NOW - timedelta(days=30))


@pytest.fixture
def ak() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())
