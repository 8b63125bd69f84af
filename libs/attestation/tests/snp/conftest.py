"""Fixtures of the SEV-SNP tests: fake AMD hierarchies (session-scoped: RSA keys are slow to
mint) and the real vectors from ``../shared/vectors`` (skipped with a reason when absent).

Tests reach the fake AMD signer (``constellation.attestation.testing.fakeamd``) through the
``fakeamd`` fixture.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from constellation.attestation.testing import fakeamd as _fakeamd

_HERE = Path(__file__).resolve().parent
_REPO_ROOT = _HERE.parents[3]
VECTORS = _REPO_ROOT.parent / "shared" / "vectors"


@pytest.fixture(scope="session")
def fakeamd() -> ModuleType:
    return _fakeamd


@pytest.fixture(scope="session")
def milan(fakeamd: ModuleType):
    return fakeamd.FakeAmd("Milan")


@pytest.fixture(scope="session")
def genoa(fakeamd: ModuleType):
    return fakeamd.FakeAmd("Genoa")


@pytest.fixture(scope="session")
def turin(fakeamd: ModuleType):
    return fakeamd.FakeAmd("Turin")


@pytest.fixture(scope="session")
def azure_dir() -> Path:
    path = VECTORS / "azure-sev-snp"
    if not (path / "attestation.bin").is_file():
        pytest.skip(f"real Azure SEV-SNP vectors not found at {path} (../shared/vectors absent)")
    return path


@pytest.fixture(scope="session")
def amd_roots_dir() -> Path:
    path = VECTORS / "amd-roots"
    if not path.is_dir():
        pytest.skip(f"AMD root chains not found at {path} (../shared/vectors absent)")
    return path
