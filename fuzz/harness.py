"""Run one fuzz target under atheris (libFuzzer): ``python fuzz/harness.py NAME [libFuzzer args]``.

Only the project's code is instrumented for coverage (``constellation.*``), so libFuzzer's
guidance follows our parsers rather than the standard library's. An exception that is not a
``ConstellationError`` ends the run and libFuzzer writes the input as ``crash-<sha1>`` (with
``-artifact_prefix``); ``fuzz/run.py`` drives this script, one process per target.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Deep inputs must reach the parsers' own depth bounds, not the interpreter's limit first.
sys.setrecursionlimit(1000)

import atheris  # noqa: E402

with atheris.instrument_imports(include=["constellation"]):
    import fuzzsupport

    name = sys.argv[1]
    module = fuzzsupport.load_target(name)


def main() -> None:
    atheris.Setup([sys.argv[0], *sys.argv[2:]], fuzzsupport.guarded(module.target))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
