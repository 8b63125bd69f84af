"""Time to a ready loopback control plane, and the cost of `hack/kubernetes-components ensure`.

Figures:

* control plane, cold: a fresh directory (kubeadm PKI + kubeconfigs, etcd, kube-apiserver,
  kube-controller-manager started, ``/readyz`` answered 200, cluster-admins bound);
* control plane, warm: the same directory started again (PKI and etcd data reused);
* ``ensure`` with an empty binaries cache (``CONSTELLATION_K8S_CACHE`` pointed at a fresh
  directory) but Go's module and build caches as they are on this machine: this is what CI
  pays when the binaries cache is gone; a truly cold Go cache (``--cold-go-cache``) rebuilds
  everything and takes tens of minutes on 2 cores;
* ``ensure`` warm: every binary cached and only re-hashed.

Usage: ``uv run python benchmarks/controlplane.py --rounds 5 [--skip-ensure-cold]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from constellation.bootstrapper.kubernetes.components import (
    default_cache_dir,
    load_lock,
    verified_components,
)
from constellation.bootstrapper.kubernetes.controlplane import ControlPlane, ControlPlaneBinaries
from constellation.bootstrapper.kubernetes.testing import find_lock

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "hack" / "kubernetes-components"


def time_ensure(env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, str(SCRIPT), "ensure"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=4 * 3600,
    )
    return time.perf_counter() - started


def describe(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f} s"
    return (
        f"median {statistics.median(values):.2f} s (min {min(values):.2f}, "
        f"max {max(values):.2f}, n={len(values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-ensure-cold", action="store_true")
    parser.add_argument("--cold-go-cache", action="store_true")
    args = parser.parse_args()

    lock_path = find_lock()
    if lock_path is None:
        raise SystemExit("no hack/kubernetes-components.lock.json found")
    lock = load_lock(lock_path)
    installed = verified_components(lock, default_cache_dir(lock.kubernetes_version))
    binaries = ControlPlaneBinaries.from_components(installed)

    cold: list[float] = []
    warm: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-cp-") as scratch:
        for round_ in range(args.rounds):
            plane = ControlPlane(
                Path(scratch) / f"cp{round_}",
                binaries,
                kubernetes_version=lock.kubernetes_version,
            )
            started = time.perf_counter()
            with plane:
                cold.append(time.perf_counter() - started)
            started = time.perf_counter()
            with plane:
                warm.append(time.perf_counter() - started)
    print(f"control plane cold (fresh PKI dir): {describe(cold)}")
    print(f"control plane warm (same dir):      {describe(warm)}")

    env = dict(os.environ)
    warm_ensure = [time_ensure(env) for _ in range(3)]
    print(f"ensure warm (all cached, re-hashed): {describe(warm_ensure)}")
    if not args.skip_ensure_cold:
        with tempfile.TemporaryDirectory(prefix="bench-ensure-") as cache:
            cold_env = {**env, "CONSTELLATION_K8S_CACHE": cache}
            if args.cold_go_cache:
                cold_env["GOCACHE"] = str(Path(cache) / "gocache")
            label = "empty Go build cache" if args.cold_go_cache else "Go caches warm"
            print(
                f"ensure cold (empty binaries cache, {label}): {describe([time_ensure(cold_env)])}"
            )


if __name__ == "__main__":
    main()
