"""Latency of the state-disk life cycle on a file with the real cryptsetup binary.

Usage: ``uv run python benchmarks/bootstrapper_statedisk.py [--rounds N] [--argon2id]``

One round = luksFormat with a random passphrase, luksUUID, the crash-safe rekey to a 32-byte disk
key (luksAddKey into a new slot, luksKillSlot of the old one, and the slot lookups in between),
open --test-passphrase with the new key. pbkdf2/1000 iterations is what tests use; argon2id
with cryptsetup's own benchmarked cost is what a real node pays (expect seconds).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from constellation.bootstrapper.statedisk import (
    ARGON2ID,
    FAST_PBKDF2,
    DiskKey,
    PbkdfSettings,
    StateDisk,
)

DISK_SIZE = 20 * 1024 * 1024


def one_round(directory: Path, pbkdf: PbkdfSettings) -> dict[str, float]:
    path = directory / "disk.img"
    path.unlink(missing_ok=True)
    with path.open("wb") as handle:
        handle.truncate(DISK_SIZE)
    disk = StateDisk(path, pbkdf=pbkdf)
    times: dict[str, float] = {}
    start = time.perf_counter()
    initial = disk.format()
    times["format"] = time.perf_counter() - start
    start = time.perf_counter()
    disk.uuid()
    times["uuid"] = time.perf_counter() - start
    key = DiskKey(os.urandom(32))
    start = time.perf_counter()
    disk.rekey(initial, key)
    times["rekey"] = time.perf_counter() - start
    start = time.perf_counter()
    disk.check_key(key)
    times["check_key"] = time.perf_counter() - start
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--argon2id", action="store_true", help="also measure argon2id (slow)")
    args = parser.parse_args()
    settings = [("pbkdf2/1000", FAST_PBKDF2, args.rounds)]
    if args.argon2id:
        settings.append(("argon2id (default cost)", ARGON2ID, 1))
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        for name, pbkdf, rounds in settings:
            samples = [one_round(Path(tmp), pbkdf) for _ in range(rounds)]
            for step in ("format", "uuid", "rekey", "check_key"):
                values = [s[step] * 1000 for s in samples]
                print(
                    f"{name:24s} {step:10s} median {statistics.median(values):8.1f} ms "
                    f"(min {min(values):.1f}, max {max(values):.1f}, n={rounds})"
                )


if __name__ == "__main__":
    main()
