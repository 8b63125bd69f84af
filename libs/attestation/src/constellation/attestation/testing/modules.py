"""Loading a test-support file by path, once per process.

Tests run with ``--import-mode=importlib`` and the test trees are no packages, so a helper file
beside the tests (the fake AMD signer, the certificate forger, a Dockerfile reader) cannot be
imported by name. Every place that needs one loads it here, under a fixed module name, so two
tests that load the same file share one module (and its classes compare equal).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_module(name: str, path: Path) -> ModuleType:
    """The module ``name`` loaded from ``path`` (the one already loaded, if any)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as module {name}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
