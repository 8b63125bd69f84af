"""Wall-clock time of hack/build-images: base image and service images, cold and warm.

Usage (root, with buildah, podman and debootstrap installed)::

    uv run python benchmarks/build_images.py [COMPONENT]      # default: keyservice

Two runs of the real script, one after the other:

1. cold: ``hack/build-images --rebuild-base COMPONENT``: debootstrap + base image, then every
   layer of the component image (a new base invalidates them all);
2. warm: ``hack/build-images COMPONENT`` again: base present, every layer cached (uv and
   hatchling build byte-identical wheels from unchanged sources), so only the wheels are built.

The per-step seconds come from the script's own summary table; the total is measured here.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "hack" / "build-images"
SUMMARY = re.compile(r"^(\S+)\s+(localhost/\S+)\s+(\d+)$", re.MULTILINE)


def run(*args: str) -> tuple[float, dict[str, int]]:
    started = time.monotonic()
    result = subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=7200, check=False
    )
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"hack/build-images {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return elapsed, {m[0]: int(m[2]) for m in SUMMARY.findall(result.stdout)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("component", nargs="?", default="keyservice")
    component = parser.parse_args().component
    rows = []
    rows.append(("cold (`--rebuild-base`)", *run("--rebuild-base", component)))
    rows.append(("warm (nothing changed)", *run(component)))

    print(f"load average before the last run: {os.getloadavg()[0]:.1f}")
    print(f"| run | base image (s) | {component} image (s) | total (s) |")
    print("|---|---|---|---|")
    for name, total, steps in rows:
        print(f"| {name} | {steps.get('base', '?')} | {steps.get(component, '?')} | {total:.0f} |")


if __name__ == "__main__":
    main()
