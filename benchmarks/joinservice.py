"""Join tickets per second and per-join latency with many concurrently joining nodes.

Usage: ``uv run python benchmarks/joinservice.py [--nodes 50] [--rounds 2]``

Everything is real and on loopback: a kube-apiserver + etcd (the pinned binaries, through the
bootstrapper's ``ControlPlane``), the KeyService, the JoinService assembled as its command
assembles it, one swtpm for the JoinService's host and one swtpm per node. Each of the
``--nodes`` threads is one node; it joins ``--rounds`` times with a fresh disk UUID each time.

One join = what a real node does: fetch the server certificate, aTLS handshake (the JoinService
quotes its swtpm for the node's nonce; the node validates it), the node quotes its own swtpm for
the server's nonce, then ``IssueJoinTicket`` (server validates the node's quote, two KeyService
calls, disk binding create, bootstrap token Secret create, kubelet CSR signing). Evidence cannot
be pre-issued: aTLS binds it to a nonce the verifier chooses for each handshake, so the node's
swtpm quote is inside every measured join.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from constellation.attestation.atls import connect
from constellation.attestation.measurements import Measurements
from constellation.attestation.service import ServiceMetrics, configure_logging
from constellation.attestation.swtpm import SwtpmManager
from constellation.attestation.vtpm import (
    VtpmIssuer,
    VtpmValidator,
    firmware_measure,
    open_tpm,
    read_pcrs,
)
from constellation.bootstrapper.kubernetes.components import (
    default_cache_dir,
    load_lock,
    verified_components,
)
from constellation.bootstrapper.kubernetes.controlplane import ControlPlane, ControlPlaneBinaries
from constellation.bootstrapper.kubernetes.testing import find_lock
from constellation.joinservice.__main__ import validator_for
from constellation.joinservice.config import Settings
from constellation.joinservice.joinconfig import MEASUREMENTS_FILE, SALT_FILE, VARIANT_FILE
from constellation.joinservice.server import METRICS_SERVICE, build_join_server
from constellation.keyservice.keys import DataKeys, MasterSecret
from constellation.keyservice.server import KeyServiceServer
from constellation.proto import join_pb2, join_pb2_grpc

IMAGE = ((4, b"kernel"), (9, b"initrd"), (11, b"uki"))


def measured_issuer(tcti: str) -> VtpmIssuer:
    log = b""
    for pcr, part in IMAGE:
        log = firmware_measure(tcti, log, pcr, hashlib.sha256(part).digest(), part)
    return VtpmIssuer(tcti, event_log=log)


def image_measurements(tcti: str) -> Measurements:
    with open_tpm(tcti) as esapi:
        pcrs = read_pcrs(esapi)[1]
    return Measurements.from_dict({str(pcr): pcrs[pcr].hex() for pcr, _ in IMAGE})


def csr(name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{name}"),
        ]
    )
    request = (
        x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=16, help="JoinService gRPC workers")
    args = parser.parse_args()
    configure_logging("warning")  # decisions are logged per join; keep the figures readable

    lock_path = find_lock()
    if lock_path is None:
        raise SystemExit("no hack/kubernetes-components.lock.json found")
    lock = load_lock(lock_path)
    installed = verified_components(lock, default_cache_dir(lock.kubernetes_version))

    with tempfile.TemporaryDirectory(prefix="bench-join-") as scratch, SwtpmManager() as tpms:
        root = Path(scratch)
        plane = ControlPlane(
            root / "controlplane",
            ControlPlaneBinaries.from_components(installed),
            kubernetes_version=lock.kubernetes_version,
            unsafe_no_fsync=True,
        )
        with plane:
            secret = MasterSecret(key=os.urandom(32), salt=os.urandom(32))
            keyservice = KeyServiceServer(DataKeys(secret), ServiceMetrics("keyservice"))
            ks_port = keyservice.add_port("127.0.0.1:0")
            keyservice.start()

            host_tpm, *node_tpms = tpms.start(args.nodes + 1)
            host = measured_issuer(host_tpm.tcti)
            nodes = [measured_issuer(t.tcti) for t in node_tpms]
            expected = image_measurements(host_tpm.tcti)

            join_config = root / "join-config"
            join_config.mkdir()
            (join_config / VARIANT_FILE).write_bytes(b"qemu-vtpm")
            (join_config / MEASUREMENTS_FILE).write_text(expected.to_json())
            (join_config / SALT_FILE).write_bytes(os.urandom(32))
            components = root / "components.json"
            components.write_text(json.dumps({"kubernetesVersion": "v1.31.1", "components": []}))
            settings = Settings.create(
                listen_host="127.0.0.1",
                port=0,
                metrics_port=None,
                join_config_dir=join_config,
                keyservice_endpoint=f"127.0.0.1:{ks_port}",
                kubeconfig=plane.admin_kubeconfig,
                ca_cert_file=plane.ca_cert_path,
                ca_key_file=plane.ca_key_path,
                pki_dir=plane.pki_dir,
                api_server_endpoint=plane.server.removeprefix("https://"),
                components_file=components,
                tpm_tcti=host_tpm.tcti,
            )
            api = k8s_config.new_client_from_config(config_file=str(plane.admin_kubeconfig))
            api.configuration.connection_pool_maxsize = args.workers
            ks_channel = grpc.insecure_channel(settings.keyservice_endpoint)
            metrics = ServiceMetrics(METRICS_SERVICE)
            server, watcher = build_join_server(
                settings,
                issuer=host,
                validator_factory=validator_for,
                core=k8s.CoreV1Api(api),
                keyservice=ks_channel,
                metrics=metrics,
                max_workers=args.workers,
            )
            target = f"127.0.0.1:{server.add_port('127.0.0.1:0')}"
            server.start()
            server_validator = VtpmValidator(expected, require_event_log=True)

            latencies: list[float] = []
            failures: list[str] = []
            guard = threading.Lock()
            requests = [csr(f"bench-{i}") for i in range(args.nodes)]

            def run_node(index: int) -> None:
                for _ in range(args.rounds):
                    request = join_pb2.IssueJoinTicketRequest(
                        disk_uuid=str(uuid.uuid4()), certificate_request=requests[index]
                    )
                    started = time.perf_counter()
                    try:
                        with connect(
                            target, [server_validator], issuer=nodes[index], timeout=120
                        ) as channel:
                            join_pb2_grpc.APIStub(channel.channel).IssueJoinTicket(
                                request, timeout=120
                            )
                    except Exception as exc:  # report, do not hide, any failed join
                        with guard:
                            failures.append(f"{type(exc).__name__}: {exc}"[:200])
                        continue
                    elapsed = time.perf_counter() - started
                    with guard:
                        latencies.append(elapsed)

            wall_start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.nodes) as pool:
                list(pool.map(run_node, range(args.nodes)))
            wall = time.perf_counter() - wall_start

            watcher.stop()
            server.shutdown(grace=2.0)
            keyservice.grpc_server.stop(None)
            ks_channel.close()
            api.close()

    attest = metrics.registry.get_sample_value(
        "constellation_attestation_seconds_sum",
        {"service": METRICS_SERVICE, "operation": "validate"},
    )
    attest_n = metrics.registry.get_sample_value(
        "constellation_attestation_seconds_count",
        {"service": METRICS_SERVICE, "operation": "validate"},
    )
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs")
    print(f"nodes {args.nodes} concurrent, rounds {args.rounds}, server workers {args.workers}")
    print(f"joins ok {len(latencies)}, failed {len(failures)}, wall {wall:.2f}s")
    if latencies:
        print(f"join tickets/s: {len(latencies) / wall:.1f}")
        print(
            f"latency p50 {statistics.median(latencies) * 1000:.0f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, "
            f"max {max(latencies) * 1000:.0f} ms"
        )
    if attest and attest_n:
        print(f"server-side validation mean {attest / attest_n * 1000:.1f} ms ({attest_n:.0f})")
    for failure in failures[:5]:
        print("failure:", failure)


if __name__ == "__main__":
    main()
