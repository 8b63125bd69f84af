"""pytest fixtures: real swtpm software TPMs, always stopped (by PID) after the test.

Registered for the whole repository in the root ``conftest.py``. Tests using them should be
marked ``@pytest.mark.swtpm``; without the swtpm binary they are skipped with the reason.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest

from constellation.attestation.swtpm import Swtpm, SwtpmManager


def _require_swtpm() -> None:
    if shutil.which("swtpm") is None:
        pytest.skip("swtpm is not installed (Debian package: swtpm)")


@pytest.fixture
def swtpm() -> Iterator[Swtpm]:
    """One fresh swtpm instance (its own state directory, PCRs at their reset values)."""
    _require_swtpm()
    with SwtpmManager() as manager:
        (instance,) = manager.start(1)
        yield instance


@pytest.fixture
def swtpm_factory() -> Iterator[Callable[[int], list[Swtpm]]]:
    """A function starting N more swtpm instances; all are stopped at teardown."""
    _require_swtpm()
    with SwtpmManager() as manager:
        yield manager.start
