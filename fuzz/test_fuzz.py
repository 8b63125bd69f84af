"""The fuzz targets in the test command: replay every committed regression and every seed
in-process (deterministic, fast), then fuzz each target briefly under atheris.

The brief run is a smoke test of the target and of the harness (a few thousand executions,
bounded in time); the long runs are ``fuzz/run.py`` on demand, figures in FUZZING.md.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

FUZZ_DIR = Path(__file__).resolve().parent
if str(FUZZ_DIR) not in sys.path:
    sys.path.insert(0, str(FUZZ_DIR))

import fuzzsupport  # noqa: E402

SHORT_RUNS = 3000
SHORT_SECONDS = 15

NAMES = fuzzsupport.target_names()


def _runner() -> ModuleType:
    """``fuzz/run.py``, loaded by path: it is a script, not a package module."""
    if "fuzz_run" in sys.modules:
        return sys.modules["fuzz_run"]
    spec = importlib.util.spec_from_file_location("fuzz_run", FUZZ_DIR / "run.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_run"] = module
    spec.loader.exec_module(module)
    return module


def test_there_are_targets() -> None:
    assert len(NAMES) >= 1


@pytest.mark.parametrize("name", NAMES)
def test_regressions_and_seeds_are_typed(name: str) -> None:
    module = fuzzsupport.load_target(name)
    inputs = [p.read_bytes() for p in fuzzsupport.corpus(name)] + list(module.seeds())
    assert inputs, f"target {name} has neither seeds nor regressions"
    escaped = []
    for data in inputs:
        try:
            module.target(data)
        except fuzzsupport.TYPED:
            continue
        except Exception as error:  # anything else is exactly what we look for
            escaped.append(f"{type(error).__name__}: {error} (input {data[:40]!r}...)")
    assert escaped == []


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_short_fuzz_run_finds_nothing(name: str, tmp_path: Path) -> None:
    result = _runner().run_target(
        name, runs=SHORT_RUNS, max_time=SHORT_SECONDS, artifacts=tmp_path / "findings"
    )
    assert result.findings == [], result.detail
    assert result.exit_code == 0, result.detail
    assert result.executions > 0
