"""Running the real CLI entry point in-process, with its exit code and both streams."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from constellation.cli.root import run


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


Invoke = Callable[..., Result]


@pytest.fixture
def invoke(capsys: pytest.CaptureFixture[str]) -> Invoke:
    """``invoke(workspace, *args)``: run ``constellation -C workspace *args``."""

    def call(workspace: Path, *args: str) -> Result:
        capsys.readouterr()
        code = run(["-C", str(workspace), *args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return call
