"""Wall time of a full-cluster shutdown and recovery of a mini cluster, by command.

Usage: ``uv run python benchmarks/mini_recover.py [--workers 1] [--rounds 2]``

One ``constellation mini up --workers N`` in a fresh temporary workspace (not measured), then
per round: ``mini stop``, ``mini start`` (reboot: swtpm restart, firmware step, bootstrappers;
returns when the control plane waits for recovery) and ``recover`` (attest, send the master
secret, control plane restart, services restart, workers rejoin), each timed as a user runs it
(a subprocess, stdin not a terminal). ``mini down`` at the end. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = Path(sys.executable).parent / "constellation"
STEPS = (("mini", "stop"), ("mini", "start"), ("recover",))


def _run(directory: str, *args: str, timeout: float = 900) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [str(CLI), "-C", directory, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"constellation {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    timings: dict[str, list[float]] = {" ".join(step): [] for step in STEPS}
    with tempfile.TemporaryDirectory(prefix="mini-recover-bench-") as directory:
        _run(directory, "mini", "up", "--workers", str(args.workers))
        try:
            for _ in range(args.rounds):
                for step in STEPS:
                    timings[" ".join(step)].append(_run(directory, *step))
        finally:
            subprocess.run(
                [str(CLI), "-C", directory, "mini", "down"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=300,
                check=False,
            )
    print(f"| command (1 control plane + {args.workers} worker(s)) | median s | min s | max s |")
    print("|---|---|---|---|")
    for name, values in timings.items():
        print(
            f"| `constellation {name}` | {statistics.median(values):.1f} | "
            f"{min(values):.1f} | {max(values):.1f} |"
        )


if __name__ == "__main__":
    main()
