"""Where the time of one ``Init`` goes on a mini-mode node (everything real).

Usage: ``uv run python benchmarks/bootstrapper_init.py [--rounds N]``

One round = a fresh swtpm node with a LUKS2 header on a file (pbkdf2/1000, as in tests), its
init server on loopback aTLS, and a CLI-like client that attests the node and streams ``Init``
with the four pinned control-plane binaries as components (file:// URLs, ~hundreds of MB). The
init secret's bcrypt hash uses the production cost (12). Phases are measured on the client from
the arrival times of the node's ``Progress`` messages, so each figure includes one message hop.
Needs the pinned Kubernetes binaries (``hack/kubernetes-components ensure``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from constellation.attestation import atls
from constellation.attestation.service.logging import configure_logging
from constellation.attestation.swtpm import SwtpmManager
from constellation.bootstrapper.initsecret import InitSecret, hash_init_secret
from constellation.bootstrapper.initserver import LocalControlPlane
from constellation.bootstrapper.kubernetes.components import (
    default_cache_dir,
    load_lock,
    verified_components,
)
from constellation.bootstrapper.kubernetes.testing import find_lock
from constellation.bootstrapper.metadata import write_metadata_file
from constellation.bootstrapper.testing import (
    INIT_SECRET,
    component_for,
    init_request,
    make_node,
    serve_init,
    uninitialized_node_validator,
)
from constellation.proto import init_pb2_grpc

BINARIES = ("kubeadm", "etcd", "kube-apiserver", "kube-controller-manager")
PHASES = (
    "attest node (aTLS connect)",
    "init secret (bcrypt cost 12) + validation",
    "fetch + SHA-256 verify components",
    "node lock (PCR 15)",
    "state disk rekey",
    "install components",
    "control plane up",
    "persist state + InitSuccess",
    "total (from connect)",
)


def one_round(directory: Path, tpm: object, components: list, version: str) -> dict[str, float]:
    node = make_node(directory, tpm)  # type: ignore[arg-type]
    metadata = node.metadata.self()
    write_metadata_file(
        node.metadata.path,
        type(metadata)(
            name=metadata.name,
            role=metadata.role,
            private_ip=metadata.private_ip,
            init_secret_hash=hash_init_secret(InitSecret(INIT_SECRET), cost=12),
            control_plane_endpoints=(),
        ),
    )
    request = init_request(components)
    request.kubernetes_version = version
    plane = LocalControlPlane(directory / "controlplane")
    arrivals: list[tuple[str, str, float]] = []
    try:
        with serve_init(node, plane) as target:
            start = time.perf_counter()
            with atls.connect(target, [uninitialized_node_validator()], timeout=60) as channel:
                connected = time.perf_counter()
                stub = init_pb2_grpc.APIStub(channel.channel)
                for response in stub.Init(request, timeout=600):
                    kind = response.WhichOneof("kind")
                    phase = response.progress.phase if kind == "progress" else kind
                    arrivals.append((phase, response.progress.message, time.perf_counter()))
    finally:
        plane.stop()
    if arrivals[-1][0] != "init_success":
        raise SystemExit(f"init did not succeed: {arrivals[-1]}")

    def at(phase: str, nth: int = 0) -> float:
        return [t for p, _, t in arrivals if p == phase][nth]

    return {
        PHASES[0]: connected - start,
        PHASES[1]: at("validate") - connected,
        PHASES[2]: at("components.verify", 1) - at("components.verify", 0),
        PHASES[3]: at("node-lock") - at("components.verify", 1),
        PHASES[4]: at("state-disk") - at("node-lock"),
        PHASES[5]: at("components.install") - at("state-disk"),
        PHASES[6]: at("control-plane", 1) - at("control-plane", 0),
        PHASES[7]: at("init_success") - at("control-plane", 1),
        PHASES[8]: at("init_success") - connected,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure_logging("warning")
    lock_path = find_lock()
    if lock_path is None:
        raise SystemExit("no hack/kubernetes-components.lock.json found")
    lock = load_lock(lock_path)
    installed = verified_components(lock, default_cache_dir(lock.kubernetes_version), BINARIES)
    sizes = sum(installed.path(name).stat().st_size for name in BINARIES)
    results: dict[str, list[float]] = {phase: [] for phase in PHASES}
    with tempfile.TemporaryDirectory() as scratch, SwtpmManager() as tpms:
        components = [
            component_for(name, installed.path(name), f"/usr/local/bin/{name}") for name in BINARIES
        ]
        for index in range(args.rounds):
            (tpm,) = tpms.start(1)
            figures = one_round(
                Path(scratch) / f"round-{index}", tpm, components, lock.kubernetes_version
            )
            for phase, seconds in figures.items():
                results[phase].append(seconds)
            tpm.stop()
    print(
        f"# {platform.python_version()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
        f"{args.rounds} rounds, components {sizes / 1e6:.0f} MB"
    )
    print("| phase | median | min | max |")
    print("|---|---|---|---|")
    for phase, values in results.items():
        print(
            f"| {phase} | {statistics.median(values) * 1000:.0f} ms "
            f"| {min(values) * 1000:.0f} ms | {max(values) * 1000:.0f} ms |"
        )


if __name__ == "__main__":
    main()
