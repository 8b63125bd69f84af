"""Wall time of ``constellation mini up`` (warm caches) and its split by phase.

Usage: ``uv run python benchmarks/mini_up.py [--workers 2 5] [--rounds 2]``

Each round runs the real command as a user would (``constellation mini up --workers N`` in a
fresh temporary workspace, stdin not a terminal), reads the per-step durations the CLI prints
on stderr (``done: <step> (<seconds>s)``), then ``mini down``. A first, unmeasured round per
worker count warms the OS page cache and Python's bytecode caches. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = Path(sys.executable).parent / "constellation"
STEP = re.compile(r"^done: (?P<step>.+) \((?P<seconds>[0-9.]+)s\)$", re.MULTILINE)


def _phase(step: str) -> str:
    if step.startswith("booting"):
        return "boot nodes (swtpm, measured boot, bootstrapper)"
    if step.startswith("waiting for"):
        return "workers join"
    return step


def run_once(workers: int) -> tuple[float, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="mini-bench-") as directory:
        started = time.perf_counter()
        up = subprocess.run(
            [str(CLI), "-C", directory, "mini", "up", "--workers", str(workers), "-o", "json"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        wall = time.perf_counter() - started
        subprocess.run(
            [str(CLI), "-C", directory, "mini", "down"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=300,
            check=False,
        )
        if up.returncode != 0:
            raise SystemExit(f"mini up failed:\n{up.stderr[-3000:]}")
    phases = {_phase(m["step"]): float(m["seconds"]) for m in STEP.finditer(up.stderr)}
    return wall, phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 5])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for workers in args.workers:
        run_once(workers)  # warm-up
        results = [run_once(workers) for _ in range(args.rounds)]
        walls = [wall for wall, _ in results]
        print(f"\n### 1 control plane + {workers} workers ({args.rounds} rounds, median)\n")
        print(
            f"mini up wall time: {statistics.median(walls):.1f} s (runs: "
            + ", ".join(f"{w:.1f}" for w in walls)
            + ")\n"
        )
        print("| phase | seconds |")
        print("|---|---|")
        for phase in results[0][1]:
            values = [phases.get(phase, 0.0) for _, phases in results]
            print(f"| {phase} | {statistics.median(values):.1f} |")


if __name__ == "__main__":
    main()
