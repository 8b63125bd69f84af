"""What the fuzz targets, the harness and the tests share: where targets, corpora and the
recorded evidence live, and the one rule of the harness (only typed errors may escape).

``fuzz/`` is not a package that gets installed: the harness and the tests put this directory on
``sys.path`` and import ``fuzzsupport`` and ``targets.<name>`` from it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType

from constellation.attestation.errors import ConstellationError

FUZZ_DIR = Path(__file__).resolve().parent
REPO = FUZZ_DIR.parent
CORPUS_DIR = FUZZ_DIR / "corpus"
SHARED_VECTORS = REPO.parent / "shared" / "vectors"

# Raising one of these is a refusal, not a finding.
TYPED = (ConstellationError,)


def target_names() -> list[str]:
    return sorted(p.stem for p in (FUZZ_DIR / "targets").glob("*.py") if not p.name.startswith("_"))


def load_target(name: str) -> ModuleType:
    return importlib.import_module(f"targets.{name}")


def shared_vector(relative: str) -> bytes | None:
    """Bytes of a recorded vector under ``../shared/vectors``, or ``None`` where it is absent."""
    path = SHARED_VECTORS / relative
    try:
        return path.read_bytes()
    except OSError:
        return None


def corpus(name: str) -> list[Path]:
    """The committed, minimized regressions of one target (inputs that once were findings)."""
    directory = CORPUS_DIR / name
    return sorted(p for p in directory.iterdir() if p.is_file()) if directory.is_dir() else []


def guarded(target: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """``target`` with typed refusals swallowed: what escapes is a finding."""

    def run(data: bytes) -> None:
        try:
            target(data)
        except TYPED:
            return

    return run


def seeds_of(module: ModuleType) -> Iterable[bytes]:
    return list(module.seeds())
