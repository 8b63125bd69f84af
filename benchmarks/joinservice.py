"""Join tickets per second and per-join latency with many concurrently joining nodes.

Usage: ``uv run python benchmarks/joinservice.py [--nodes 50] [--rounds 2] [--in-process]``

Everything is real and on loopback: a kube-apiserver + etcd (the pinned binaries, through the
bootstrapper's ``ControlPlane``), the KeyService, the JoinService assembled as its command
assembles it (by default *as* its command, in a process of its own, so the node threads of this
process do not share its interpreter lock), one swtpm for the JoinService's host and one swtpm
per node. Each of the
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
import json
import os
import platform
import queue
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from constellation.attestation.atls import connect
from constellation.attestation.identity import Role
from constellation.attestation.measurements import Measurements
from constellation.attestation.service import ServiceMetrics, configure_logging
from constellation.attestation.swtpm import SwtpmManager
from constellation.attestation.testing.platform import (
    BOOT_CHAIN,
    cached_platform_ca,
    measure_boot,
    node_validator,
    provision_node,
)
from constellation.attestation.vtpm import VtpmIssuer, open_tpm, read_pcrs
from constellation.bootstrapper.kubernetes.components import (
    default_cache_dir,
    load_lock,
    verified_components,
)
from constellation.bootstrapper.kubernetes.controlplane import ControlPlane, ControlPlaneBinaries
from constellation.bootstrapper.kubernetes.testing import find_lock
from constellation.cli.servicepki import issue_service_pki
from constellation.joinservice.__main__ import validator_for
from constellation.joinservice.config import Settings
from constellation.joinservice.joinconfig import (
    MEASUREMENTS_FILE,
    PLATFORM_ROOTS_FILE,
    SALT_FILE,
    VARIANT_FILE,
)
from constellation.joinservice.keys import KeyServiceTLS, keyservice_channel
from constellation.joinservice.server import METRICS_SERVICE, build_join_server
from constellation.keyservice.keys import DataKeys, MasterSecret
from constellation.keyservice.server import KeyServiceServer
from constellation.keyservice.tls import load_server_tls
from constellation.proto import join_pb2, join_pb2_grpc

IMAGE = BOOT_CHAIN


def measured_issuer(tcti: str, name: str, role: Role) -> tuple[VtpmIssuer, bytes, bytes]:
    """A node as the (test) platform makes it: the image measured into its vTPM, its AK
    certified as ``name``/``role``. The issuer, its event log and its AK certificate (DER)."""
    log = measure_boot(tcti, IMAGE)
    certificate = provision_node(tcti, cached_platform_ca(), name, role)
    return VtpmIssuer(tcti, event_log=log, ak_certificate=certificate), log, certificate


class JoinServiceProcess:
    """``constellation-joinservice`` as its own process (own GIL), stopped by PID."""

    def __init__(self, settings: Settings, event_log: Path) -> None:
        self._settings = settings
        self._event_log = event_log
        self._metrics_port = free_port()
        self._process: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[dict[str, Any]] = queue.Queue()

    def start(self) -> str:
        s = self._settings
        command = [
            sys.executable,
            "-m",
            "constellation.joinservice",
            "--listen=127.0.0.1",
            "--port=0",
            "--health-port=0",
            f"--metrics-port={self._metrics_port}",
            "--log-level=info",  # the listening line (with the port) is an info line
            f"--join-config-dir={s.join_config_dir}",
            f"--keyservice-endpoint={s.keyservice_endpoint}",
            f"--keyservice-ca-file={s.keyservice_ca_file}",
            f"--keyservice-cert-file={s.keyservice_cert_file}",
            f"--keyservice-key-file={s.keyservice_key_file}",
            f"--kubeconfig={s.kubeconfig}",
            f"--ca-cert-file={s.ca_cert_file}",
            f"--ca-key-file={s.ca_key_file}",
            f"--api-server-endpoint={s.api_server_endpoint}",
            f"--components-file={s.components_file}",
            f"--tpm-tcti={s.tpm_tcti}",
            f"--event-log={self._event_log}",
            f"--ak-certificate-file={s.ak_certificate_file}",
        ]
        self._process = subprocess.Popen(
            command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 60
        while (left := deadline - time.monotonic()) > 0:
            try:
                entry = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if entry.get("event") == "joinservice.listening":
                return f"127.0.0.1:{entry['port']}"
        self.stop()
        raise SystemExit("the JoinService process did not start within 60s")

    def _read(self) -> None:
        assert self._process is not None
        assert self._process.stderr is not None
        for line in self._process.stderr:
            if '"joinservice.listening"' in line:
                self._lines.put(json.loads(line))

    def validation_seconds(self) -> tuple[float | None, float | None]:
        url = f"http://127.0.0.1:{self._metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if (
                line.startswith("constellation_attestation_seconds_")
                and 'operation="validate"' in line
            ):
                name = line.split("{", 1)[0]
                values[name] = float(line.rsplit(" ", 1)[1])
        return (
            values.get("constellation_attestation_seconds_sum"),
            values.get("constellation_attestation_seconds_count"),
        )

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)


class TimedIssuer:
    """Adds up the time the JoinService host's TPM spends quoting (handshakes are serialized
    on it: a TPM without resource manager serves one command sequence at a time)."""

    def __init__(self, inner: VtpmIssuer) -> None:
        self._inner = inner
        self.busy = 0.0
        self.count = 0

    @property
    def variant(self) -> str:
        return self._inner.variant

    def issue(self, user_data: bytes, nonce: bytes) -> bytes:
        started = time.perf_counter()
        try:
            return self._inner.issue(user_data, nonce)
        finally:
            self.busy += time.perf_counter() - started
            self.count += 1


class InProcessJoinService:
    """The same service in this process (shares the GIL with the 50 node threads)."""

    def __init__(self, settings: Settings, host: VtpmIssuer, workers: int) -> None:
        self.host = TimedIssuer(host)
        self._api = k8s_config.new_client_from_config(config_file=str(settings.kubeconfig))
        self._api.configuration.connection_pool_maxsize = workers
        tls_files = settings.keyservice_tls_files
        assert tls_files is not None  # main() always configures the KeyService's mutual TLS
        self._channel = keyservice_channel(
            settings.keyservice_endpoint, KeyServiceTLS.from_files(*tls_files)
        )
        self.metrics = ServiceMetrics(METRICS_SERVICE)
        self._server, self._watcher = build_join_server(
            settings,
            issuer=self.host,
            validator_factory=validator_for,
            core=k8s.CoreV1Api(self._api),
            keyservice=self._channel,
            metrics=self.metrics,
            max_workers=workers,
        )

    def start(self) -> str:
        port = self._server.add_port("127.0.0.1:0")
        self._server.start()
        return f"127.0.0.1:{port}"

    def validation_seconds(self) -> tuple[float | None, float | None]:
        labels = {"service": METRICS_SERVICE, "operation": "validate"}
        registry = self.metrics.registry
        return (
            registry.get_sample_value("constellation_attestation_seconds_sum", labels),
            registry.get_sample_value("constellation_attestation_seconds_count", labels),
        )

    def stop(self) -> None:
        self._watcher.stop()
        self._server.shutdown(grace=2.0)
        self._channel.close()
        self._api.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    parser.add_argument(
        "--workers", type=int, default=16, help="JoinService gRPC workers (--in-process only)"
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the JoinService in this process instead of as its command",
    )
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
            # The KeyService serves mutual TLS only: both sides get the CLI's service PKI.
            service_pki = issue_service_pki()
            server_tls = service_pki.keyservice_server
            keyservice = KeyServiceServer(
                DataKeys(secret),
                ServiceMetrics("keyservice"),
                load_server_tls(server_tls.cert_pem, server_tls.key_pem, server_tls.ca_pem),
            )
            client_files = {}
            for name, data in service_pki.joinservice_client.secret_data().items():
                client_files[name] = root / f"keyservice-client-{name}"
                client_files[name].write_bytes(data)
            ks_port = keyservice.add_port("127.0.0.1:0")
            keyservice.start()

            host_tpm, *node_tpms = tpms.start(args.nodes + 1)
            host, host_log, host_certificate = measured_issuer(
                host_tpm.tcti, "joinservice-host", Role.CONTROL_PLANE
            )
            # Node i's CSR names bench-i: the JoinService demands its attested name.
            nodes = [
                measured_issuer(t.tcti, f"bench-{i}", Role.WORKER)[0]
                for i, t in enumerate(node_tpms)
            ]
            expected = image_measurements(host_tpm.tcti)

            join_config = root / "join-config"
            join_config.mkdir()
            (join_config / VARIANT_FILE).write_bytes(b"qemu-vtpm")
            (join_config / MEASUREMENTS_FILE).write_text(expected.to_json())
            (join_config / SALT_FILE).write_bytes(os.urandom(32))
            (join_config / PLATFORM_ROOTS_FILE).write_bytes(cached_platform_ca().cert_pem)
            host_certificate_file = root / "host-ak-cert.der"
            host_certificate_file.write_bytes(host_certificate)
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
                keyservice_ca_file=client_files["ca.crt"],
                keyservice_cert_file=client_files["tls.crt"],
                keyservice_key_file=client_files["tls.key"],
                ak_certificate_file=host_certificate_file,
            )
            event_log_file = root / "host-event-log"
            event_log_file.write_bytes(host_log)
            if args.in_process:
                service: Any = InProcessJoinService(settings, host, args.workers)
            else:
                service = JoinServiceProcess(settings, event_log_file)
            target = service.start()
            server_validator = node_validator(expected)  # rooted AK, event log required

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

            attest, attest_n = service.validation_seconds()
            service.stop()
            keyservice.grpc_server.stop(None)

    mode = "in-process" if args.in_process else "separate process (the command)"
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, JoinService {mode}")
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
    if args.in_process:
        busy, count = service.host.busy, service.host.count
        print(
            f"host TPM busy quoting {busy:.2f}s of {wall:.2f}s wall "
            f"({count} quotes, mean {busy / max(count, 1) * 1000:.1f} ms)"
        )
    for failure in failures[:5]:
        print("failure:", failure)


if __name__ == "__main__":
    main()
