"""Wall time of `hack/pants list ::`: cold, warm without the daemon, warm with pantsd.

Usage: ``uv run python benchmarks/pants_list.py [--rounds N]``

- cold: empty Pants work dir, local store and named caches (all in a temporary directory), no
  daemon: what a fresh clone pays after `hack/pants` has installed Pants and its tools;
- warm, --no-pantsd: the same command again with the default caches filled;
- warm, pantsd: the daemon started by a first run, then the command again; the daemon is
  ended by its PID afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PANTS = REPO / "hack" / "pants"
TIMEOUT_S = 1200


def run(*args: str) -> float:
    started = time.monotonic()
    subprocess.run(
        [str(PANTS), *args, "list", "::"],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=TIMEOUT_S,
    )
    return time.monotonic() - started


def pantsd_pid() -> int | None:
    """The daemon of this clone, from the pid file under hack/pants' state directory."""
    home = Path(
        os.environ.get("CONSTELLATION_PANTS_HOME", Path.home() / ".cache/constellation/pants")
    )
    state = home / "state" / hashlib.sha256(str(REPO).encode()).hexdigest()[:16]
    for pid_file in (state / "pids").glob("*/pantsd/pid"):
        text = pid_file.read_text().strip()
        if text.isdigit():
            return int(text)
    return None


def stop_pantsd() -> None:
    pid = pantsd_pid()
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def summary(label: str, seconds: list[float]) -> str:
    return f"| {label} | {statistics.median(seconds):.1f} | {min(seconds):.1f} | {len(seconds)} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    run("--no-pantsd")  # installs Pants and its tools if needed; not measured
    cold = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as fresh:
            cold.append(
                run(
                    "--no-pantsd",
                    f"--pants-workdir={fresh}/workdir",
                    f"--local-store-dir={fresh}/store",
                    f"--named-caches-dir={fresh}/named",
                )
            )
    warm = [run("--no-pantsd") for _ in range(rounds)]
    stop_pantsd()
    try:
        run("--pantsd")
        daemon = [run("--pantsd") for _ in range(rounds)]
    finally:
        stop_pantsd()
    print("| run | median (s) | min (s) | rounds |")
    print("|---|---|---|---|")
    print(summary("cold (empty work dir, store and caches; no daemon)", cold))
    print(summary("warm, `--no-pantsd`", warm))
    print(summary("warm, pantsd running", daemon))


if __name__ == "__main__":
    main()
