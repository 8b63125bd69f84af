"""Fixtures of the KeyService tests: secret files (the command runs through `run_service`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def secret_files(tmp_path: Path) -> Callable[[bytes, bytes], tuple[Path, Path]]:
    def write(key: bytes, salt: bytes) -> tuple[Path, Path]:
        key_file, salt_file = tmp_path / "mastersecret", tmp_path / "salt"
        key_file.write_bytes(key)
        salt_file.write_bytes(salt)
        return key_file, salt_file

    return write
