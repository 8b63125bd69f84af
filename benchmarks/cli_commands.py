"""Latency of CLI commands an operator waits for.

Usage: ``uv run python benchmarks/cli_commands.py [--rounds N]``

- start-up: ``python -m constellation.cli version`` as a fresh process (import cost), as wall
  time and as the child's CPU time (user + system);
- fetch-measurements from a local file: load config, verify the ECDSA signature, merge, write
  atomically (in-process, through the real entry point).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from constellation.attestation.measurements import (
    ImageMeasurements,
    Measurement,
    Measurements,
    VariantMeasurements,
    sign_measurements,
)
from constellation.cli.config import DEFAULT_MINI_IMAGE
from constellation.cli.root import run


def timed(action, rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def report(name: str, samples: list[float]) -> None:
    print(
        f"{name:40s} median {statistics.median(samples):7.1f} ms "
        f"(min {min(samples):.1f}, max {max(samples):.1f}, n={len(samples)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs")

    cpu: list[float] = []

    def startup() -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(
            [sys.executable, "-m", "constellation.cli", "version"], check=True, capture_output=True
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        cpu.append(used * 1000)

    report("process start-up (`version`), wall", timed(startup, args.rounds))
    # CPU time of the child is less sensitive to other load on the machine than wall time.
    report("process start-up (`version`), CPU", cpu)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        key = ec.generate_private_key(ec.SECP256R1())
        (root / "m.pub").write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        measurements = Measurements({i: Measurement(os.urandom(32)) for i in (4, 8, 9, 11, 12)})
        data = ImageMeasurements(
            DEFAULT_MINI_IMAGE,
            "main",
            "stable",
            (VariantMeasurements("QEMU", "qemu-vtpm", measurements),),
        ).to_json()
        (root / "m.json").write_bytes(data)
        (root / "m.json.sig").write_bytes(sign_measurements(data, key))
        sink = io.StringIO()
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            assert run(["-C", tmp, "config", "generate"]) == 0

            def fetch() -> None:
                code = run(
                    [
                        "-C",
                        tmp,
                        "config",
                        "fetch-measurements",
                        "--path",
                        str(root / "m.json"),
                        "--public-key",
                        str(root / "m.pub"),
                    ]
                )
                assert code == 0

            samples = timed(fetch, args.rounds)
        report("fetch-measurements (file, verify+merge)", samples)


if __name__ == "__main__":
    main()
