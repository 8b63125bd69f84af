"""The join client against the real JoinService, the real KeyService and the real API server.

Everything a worker meets in a cluster runs here on loopback: the JoinService assembled as its
command assembles it (``build_join_server``) on a swtpm "control-plane node", the KeyService
holding the master secret, and kube-apiserver (bootstrap tokens, disk bindings, the Node
object). The joining node is a swtpm measured from the same image, with a real LUKS2 header.
Every vTPM's AK is certified by the test platform CA, whose root the join-config and the
joining node trust; the JoinService's host is a control-plane node.

A joining node trusts a JoinService only on an initialized node (PCR 15 marked), and on a
rejoin only on a node of its own cluster: a genuine image on a machine that never joined, or a
node of another cluster, could otherwise adopt it (lock it to a cluster and rekey its disk).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from constellation.attestation.identity import Role
from constellation.attestation.kdf import derive_cluster_id, derive_key, derive_measurement_secret
from constellation.attestation.measurements import Measurements, pcr15_for_cluster_id
from constellation.attestation.nodelock import NodeLock
from constellation.attestation.swtpm import Swtpm
from constellation.attestation.testing.platform import (
    BOOT_CHAIN,
    cached_platform_ca,
    measure_boot,
    node_issuer,
)
from constellation.attestation.vtpm import open_tpm, read_pcrs
from constellation.bootstrapper.config import RetryPolicy
from constellation.bootstrapper.joinclient import JoinClient, JoinTimeoutError
from constellation.bootstrapper.metadata import Endpoint, write_metadata_file
from constellation.bootstrapper.nodestate import load_node_state
from constellation.bootstrapper.registration import KubeletFiles
from constellation.bootstrapper.statedisk import DiskKey
from constellation.bootstrapper.testing import NodeParts, free_port, join_channel_factory, make_node

joinservice_main = pytest.importorskip("constellation.joinservice.__main__")
joinservice_server = pytest.importorskip("constellation.joinservice.server")
joinservice_config = pytest.importorskip("constellation.joinservice.config")
joinconfig = pytest.importorskip("constellation.joinservice.joinconfig")
keyservice_keys = pytest.importorskip("constellation.keyservice.keys")
keyservice_server = pytest.importorskip("constellation.keyservice.server")
keyservice_tls = pytest.importorskip("constellation.keyservice.tls")
joinservice_keys = pytest.importorskip("constellation.joinservice.keys")
servicepki = pytest.importorskip("constellation.cli.servicepki")

pytestmark = [pytest.mark.kube, pytest.mark.swtpm, pytest.mark.slow]

RETRY = RetryPolicy(
    initial_delay_s=0.1, max_delay_s=0.5, max_attempts=5, total_timeout_s=60, rpc_timeout_s=30
)
# ``make_cluster(host_marked_for=OWN_CLUSTER)``: the host carries the mark of the cluster it serves.
OWN_CLUSTER = "own cluster"


def _image_measurements(tpm: Swtpm) -> Measurements:
    with open_tpm(tpm.tcti) as esapi:
        _, pcrs = read_pcrs(esapi)
    return Measurements.from_dict({str(pcr): pcrs[pcr].hex() for pcr, _ in BOOT_CHAIN})


def _pcr15(tpm: Swtpm) -> bytes:
    with open_tpm(tpm.tcti) as esapi:
        _, pcrs = read_pcrs(esapi, (15,))
    return pcrs[15]


@dataclass
class Cluster:
    target: Endpoint
    master_key: bytes
    master_salt: bytes
    measurement_salt: bytes
    image: Measurements
    kubelet: Path

    @property
    def cluster_id(self) -> bytes:
        secret = derive_measurement_secret(self.master_key, self.master_salt)
        return derive_cluster_id(secret, self.measurement_salt)


@pytest.fixture
def make_cluster(
    tmp_path: Path, swtpm_factory: Any, control_plane: Any, kube_client: Any
) -> Iterator[Callable[..., Cluster]]:
    """Start a cluster's KeyService and JoinService (``host_marked_for``: the node-lock mark of
    the JoinService's host, ``OWN_CLUSTER`` by default, ``None`` for an unmarked host)."""
    with ExitStack() as stack:
        numbers = itertools.count()

        def start(*, host_marked_for: bytes | str | None = OWN_CLUSTER) -> Cluster:
            directory = tmp_path / f"cluster-{next(numbers)}"
            directory.mkdir()
            return _start_cluster(
                stack, directory, swtpm_factory, control_plane, kube_client, host_marked_for
            )

        yield start


@pytest.fixture
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    return make_cluster()


def _start_cluster(
    stack: ExitStack,
    tmp_path: Path,
    swtpm_factory: Any,
    control_plane: Any,
    kube_client: Any,
    host_marked_for: bytes | str | None,
) -> Cluster:
    from kubernetes import client as k8s

    from constellation.attestation.service import ServiceMetrics

    (host,) = swtpm_factory(1)
    host_log = measure_boot(host.tcti, BOOT_CHAIN)
    image = _image_measurements(host)
    master_key, master_salt, measurement_salt = os.urandom(32), os.urandom(32), os.urandom(32)
    measurement_secret = derive_measurement_secret(master_key, master_salt)
    if host_marked_for == OWN_CLUSTER:
        # The JoinService's host is an initialized node of this cluster: PCR 15 carries the mark.
        host_marked_for = derive_cluster_id(measurement_secret, measurement_salt)
    if isinstance(host_marked_for, bytes):
        assert NodeLock(host.tcti).try_lock(host_marked_for)
    # The KeyService serves mutual TLS only; the CLI's service PKI gives both sides their files.
    service_pki = servicepki.issue_service_pki()
    server_tls, client_tls = service_pki.keyservice_server, service_pki.joinservice_client
    keys = keyservice_server.KeyServiceServer(
        keyservice_keys.DataKeys(keyservice_keys.MasterSecret(key=master_key, salt=master_salt)),
        ServiceMetrics("keyservice"),
        keyservice_tls.load_server_tls(server_tls.cert_pem, server_tls.key_pem, server_tls.ca_pem),
    )
    keys_port = keys.add_port("127.0.0.1:0")
    keys.start()

    config_dir = tmp_path / "join-config"
    config_dir.mkdir()
    (config_dir / joinconfig.VARIANT_FILE).write_bytes(b"qemu-vtpm")
    (config_dir / joinconfig.MEASUREMENTS_FILE).write_text(image.to_json())
    (config_dir / joinconfig.SALT_FILE).write_bytes(measurement_salt)
    (config_dir / joinconfig.PLATFORM_ROOTS_FILE).write_bytes(cached_platform_ca().cert_pem)
    kubelet = tmp_path / "artifacts" / "kubelet"
    kubelet.parent.mkdir()
    kubelet.write_bytes(b"#!/bin/sh\necho kubelet\n")
    components = tmp_path / "components.json"
    components.write_text(
        json.dumps(
            {
                "kubernetesVersion": "v1.31.1",
                "components": [
                    {
                        "name": "kubelet",
                        "url": kubelet.as_uri(),
                        "hash": "sha256:" + hashlib.sha256(kubelet.read_bytes()).hexdigest(),
                        "installPath": "/usr/bin/kubelet",
                        "extract": False,
                    }
                ],
            }
        )
    )
    settings = joinservice_config.Settings.create(
        listen_host="127.0.0.1",
        port=0,
        metrics_port=None,
        join_config_dir=config_dir,
        poll_interval=0.5,
        keyservice_endpoint=f"127.0.0.1:{keys_port}",
        kubeconfig=control_plane.admin_kubeconfig,
        ca_cert_file=control_plane.ca_cert_path,
        ca_key_file=control_plane.ca_key_path,
        pki_dir=control_plane.pki_dir,
        api_server_endpoint=control_plane.server.removeprefix("https://"),
        components_file=components,
        tpm_tcti=host.tcti,
    )
    channel = joinservice_keys.keyservice_channel(
        f"127.0.0.1:{keys_port}",
        joinservice_keys.KeyServiceTLS.load(
            client_tls.ca_pem, client_tls.cert_pem, client_tls.key_pem
        ),
    )
    server, watcher = joinservice_server.build_join_server(
        settings,
        issuer=node_issuer(host.tcti, "control-plane-0", Role.CONTROL_PLANE, event_log=host_log),
        validator_factory=joinservice_main.validator_for,
        core=k8s.CoreV1Api(kube_client),
        keyservice=channel,
    )
    stack.callback(lambda: keys.grpc_server.stop(None).wait(5))
    stack.callback(channel.close)
    port = server.add_port("127.0.0.1:0")
    server.start()
    stack.callback(lambda: server.shutdown(grace=1.0))
    watcher.start()
    stack.callback(watcher.stop)
    return Cluster(
        Endpoint("127.0.0.1", port), master_key, master_salt, measurement_salt, image, kubelet
    )


def _client(node: NodeParts, cluster: Cluster) -> JoinClient:
    return JoinClient(
        metadata=node.metadata,
        connect=join_channel_factory(node, cluster.image, timeout=30),
        node_lock=node.lock,
        state_disk=node.disk,
        installer=node.installer,
        kubelet_files=KubeletFiles(node.directory / "state" / "kubelet"),
        node_state_path=node.node_state_path,
        retry=RETRY,
    )


def _worker(tmp_path: Path, swtpm: Swtpm, number: int, cluster: Cluster) -> NodeParts:
    """Worker ``worker-<number>`` on 127.0.0.<number>, booted with the image's chain, pointed
    at ``cluster``'s JoinService."""
    return make_node(
        tmp_path / "worker",
        swtpm,
        name=f"worker-{number}",
        role=Role.WORKER,
        ip=f"127.0.0.{number}",
        endpoints=(cluster.target,),
        boot=BOOT_CHAIN,
    )


def test_worker_joins_and_rejoins_through_the_real_joinservice(
    cluster: Cluster, swtpm: Swtpm, tmp_path: Path, kube_client: Any
) -> None:
    from kubernetes import client as k8s

    node = _worker(tmp_path, swtpm, 7, cluster)
    outcome = _client(node, cluster).join(node.initial_key)
    assert outcome is not None

    measurement_secret = derive_measurement_secret(cluster.master_key, cluster.master_salt)
    cluster_id = derive_cluster_id(measurement_secret, cluster.measurement_salt)
    assert outcome.cluster_id == cluster_id
    with open_tpm(swtpm.tcti) as esapi:
        _, pcrs = read_pcrs(esapi, (15,))
    assert pcrs[15] == pcr15_for_cluster_id(cluster_id)
    uuid = node.disk.uuid()
    disk_key = DiskKey(derive_key(cluster.master_key, cluster.master_salt, "key-" + uuid, 32))
    node.disk.check_key(disk_key)
    assert not node.disk.key_matches(node.initial_key)
    installed = node.installer.install_root / "usr/bin/kubelet"
    assert installed.read_bytes() == cluster.kubelet.read_bytes()
    registered = k8s.CoreV1Api(kube_client).read_node("worker-7")
    assert registered.metadata.name == "worker-7"
    state = load_node_state(node.node_state_path)
    assert state.cluster_id == cluster_id

    # The bootstrapper restarts on the same vTPM: rejoin, the disk key opens the header, and
    # PCR 15 keeps its single mark.
    key = _client(node, cluster).rejoin(state)
    assert key == disk_key
    with open_tpm(swtpm.tcti) as esapi:
        _, after = read_pcrs(esapi, (15,))
    assert after[15] == pcrs[15]


def test_bootstrapper_wiring_joins_then_rejoins_after_restart(
    cluster: Cluster, swtpm: Swtpm, tmp_path: Path, kube_client: Any
) -> None:
    """``build_node`` as the command wires it: the join path commits, the init server stops;
    a process restarted on the same boot fetches nothing (its disk is still open); on another
    boot it rejoins, without a second mark."""
    from kubernetes import client as k8s

    from constellation.bootstrapper.__main__ import build_node
    from constellation.bootstrapper.config import config_from_mapping
    from constellation.bootstrapper.node import CommitPath

    node = _worker(tmp_path, swtpm, 8, cluster)
    with node.disk.device.open("r+b") as handle:  # a blank disk, as on first boot
        handle.write(bytes(1 << 20))
    (tmp_path / "eventlog.bin").write_bytes(node.event_log)
    (tmp_path / "ak-cert.der").write_bytes(node.ak_certificate)
    (tmp_path / "platform-roots.pem").write_bytes(cached_platform_ca().cert_pem)
    (tmp_path / "measurements.json").write_text(cluster.image.to_json())
    init_port = free_port()
    boot_id = tmp_path / "boot_id"
    boot_id.write_text(f"{uuid.uuid4()}\n")
    config = config_from_mapping(
        {
            "boot_id_path": str(boot_id),
            "metadata_path": str(node.metadata.path),
            "state_disk_path": str(node.disk.device),
            "state_dir": str(node.directory / "state"),
            "install_root": str(node.installer.install_root),
            "tpm_tcti": swtpm.tcti,
            "init_port": init_port,
            "join_measurements_path": str(tmp_path / "measurements.json"),
            "event_log_path": str(tmp_path / "eventlog.bin"),
            "ak_certificate_path": str(tmp_path / "ak-cert.der"),
            "platform_roots_path": str(tmp_path / "platform-roots.pem"),
            "component_source_dirs": [str(cluster.kubelet.parent)],
            "join_retry": {"initial_delay_s": 0.1, "max_delay_s": 0.5, "max_attempts": 5},
            "fast_luks_pbkdf": True,
        }
    )
    supervisor, plane = build_node(config)
    outcome = supervisor.run()
    assert outcome is not None
    assert outcome.path == CommitPath.JOINED
    assert not _listening(init_port)  # the init server stopped once the join committed
    assert k8s.CoreV1Api(kube_client).read_node("worker-8").metadata.name == "worker-8"
    with open_tpm(swtpm.tcti) as esapi:
        _, marked = read_pcrs(esapi, (15,))
    assert marked[15] == pcr15_for_cluster_id(outcome.cluster_id)

    restarted, _ = build_node(config)
    same_boot = restarted.run()
    assert same_boot is not None
    assert same_boot.path == CommitPath.RESTARTED
    assert same_boot.cluster_id == outcome.cluster_id

    boot_id.write_text(f"{uuid.uuid4()}\n")  # another boot (this vTPM kept its PCRs)
    rebooted, _ = build_node(config)
    again = rebooted.run()
    assert again is not None
    assert again.path == CommitPath.REJOINED
    assert again.cluster_id == outcome.cluster_id
    with open_tpm(swtpm.tcti) as esapi:
        _, after = read_pcrs(esapi, (15,))
    assert after[15] == marked[15]
    plane.stop()


def test_a_joinservice_on_an_unmarked_node_is_refused_and_the_node_never_locks(
    make_cluster: Callable[..., Cluster], swtpm: Swtpm, tmp_path: Path, kube_client: Any
) -> None:
    """The genuine image, the real JoinService and KeyService, but on a host that never joined
    a cluster (PCR 15 zero): the node refuses it during the handshake and stays untouched."""
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    rogue = make_cluster(host_marked_for=None)
    node = _worker(tmp_path, swtpm, 9, rogue)
    with pytest.raises(JoinTimeoutError, match=r"pcr\[15\]") as info:
        _client(node, rogue).join(node.initial_key)
    assert "never joined a cluster" in str(info.value)
    assert _pcr15(swtpm) == bytes(32)  # never locked
    node.disk.check_key(node.initial_key)  # never rekeyed
    assert not node.node_state_path.exists()
    assert not (node.installer.install_root / "usr/bin/kubelet").exists()
    with pytest.raises(ApiException) as missing:
        k8s.CoreV1Api(kube_client).read_node("worker-9")
    assert missing.value.status == 404


def test_a_rejoin_against_the_joinservice_of_another_cluster_is_refused(
    make_cluster: Callable[..., Cluster], swtpm: Swtpm, tmp_path: Path
) -> None:
    """A node of one cluster, restarted, is pointed at another cluster's JoinService (a real,
    initialized control plane, marked for its own cluster): the node refuses it before its disk
    UUID leaves the node, keeps its single mark and its disk key."""
    ours, theirs = make_cluster(), make_cluster()
    node = _worker(tmp_path, swtpm, 10, ours)
    assert _client(node, ours).join(node.initial_key) is not None
    state = load_node_state(node.node_state_path)
    marked = _pcr15(swtpm)
    disk_key = DiskKey(derive_key(ours.master_key, ours.master_salt, "key-" + node.disk.uuid(), 32))

    write_metadata_file(
        node.metadata.path,
        dataclasses.replace(node.metadata.self(), control_plane_endpoints=(theirs.target,)),
    )
    with pytest.raises(JoinTimeoutError, match=r"pcr\[15\]") as info:
        _client(node, theirs).rejoin(state)
    assert "a node of this node's cluster" in str(info.value)
    assert pcr15_for_cluster_id(theirs.cluster_id).hex() in str(info.value)
    assert _pcr15(swtpm) == marked == pcr15_for_cluster_id(ours.cluster_id)
    node.disk.check_key(disk_key)
    assert load_node_state(node.node_state_path) == state


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
