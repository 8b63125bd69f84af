"""pytest fixtures: real swtpm software TPMs, always stopped (by PID) after the test, and
the logging configuration restored after every test.

Registered for the whole repository in the root ``conftest.py``. Tests using swtpm should be
marked ``@pytest.mark.swtpm``; without the swtpm binary they are skipped with the reason.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest
import structlog

from constellation.attestation.swtpm import Swtpm, SwtpmManager


@pytest.fixture(autouse=True)
def _isolated_logging() -> Iterator[None]:
    """Every test starts with the structlog configuration the previous one found.

    Services and the CLI configure structlog with the stream they were given; a test that runs
    one in-process with a captured stream would otherwise leave later tests (in any order)
    logging into a closed file.
    """
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


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
