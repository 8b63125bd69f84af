"""The join client against the real JoinService, the real KeyService and the real API server.

Everything a worker meets in a cluster runs here on loopback: the JoinService assembled as its
command assembles it (``build_join_server``) on a swtpm "control-plane node", the KeyService
holding the master secret, and kube-apiserver (bootstrap tokens, disk bindings, the Node
object). The joining node is a swtpm measured from the same image, with a real LUKS2 header.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from constellation.attestation.kdf import derive_cluster_id, derive_key, derive_measurement_secret
from constellation.attestation.measurements import Measurements, pcr15_for_cluster_id
from constellation.attestation.nodelock import NodeLock
from constellation.attestation.swtpm import Swtpm
from constellation.attestation.vtpm import VtpmIssuer, firmware_measure, open_tpm, read_pcrs
from constellation.bootstrapper.config import RetryPolicy
from constellation.bootstrapper.joinclient import JoinClient
from constellation.bootstrapper.metadata import Endpoint, Role
from constellation.bootstrapper.nodestate import load_node_state
from constellation.bootstrapper.registration import KubeletFiles
from constellation.bootstrapper.statedisk import DiskKey
from constellation.bootstrapper.testing import NodeParts, join_channel_factory, make_node

joinservice_main = pytest.importorskip("constellation.joinservice.__main__")
joinservice_server = pytest.importorskip("constellation.joinservice.server")
joinservice_config = pytest.importorskip("constellation.joinservice.config")
joinconfig = pytest.importorskip("constellation.joinservice.joinconfig")
keyservice_keys = pytest.importorskip("constellation.keyservice.keys")
keyservice_server = pytest.importorskip("constellation.keyservice.server")

pytestmark = [pytest.mark.kube, pytest.mark.swtpm, pytest.mark.slow]

IMAGE = ((4, b"kernel"), (9, b"initrd"), (11, b"uki"))
RETRY = RetryPolicy(
    initial_delay_s=0.1, max_delay_s=0.5, max_attempts=5, total_timeout_s=60, rpc_timeout_s=30
)


def _measure(tpm: Swtpm) -> bytes:
    """Mini-mode firmware: measure the image into PCRs 4/9/11 and return the event log."""
    log = b""
    for pcr, part in IMAGE:
        log = firmware_measure(tpm.tcti, log, pcr, hashlib.sha256(part).digest(), part)
    return log


def _image_measurements(tpm: Swtpm) -> Measurements:
    with open_tpm(tpm.tcti) as esapi:
        _, pcrs = read_pcrs(esapi)
    return Measurements.from_dict({str(pcr): pcrs[pcr].hex() for pcr, _ in IMAGE})


@dataclass
class Cluster:
    target: Endpoint
    master_key: bytes
    master_salt: bytes
    measurement_salt: bytes
    image: Measurements
    kubelet: Path


@pytest.fixture
def cluster(
    tmp_path: Path, swtpm_factory: Any, control_plane: Any, kube_client: Any
) -> Iterator[Cluster]:
    from kubernetes import client as k8s

    from constellation.attestation.service import ServiceMetrics

    (host,) = swtpm_factory(1)
    host_log = _measure(host)
    image = _image_measurements(host)
    master_key, master_salt, measurement_salt = os.urandom(32), os.urandom(32), os.urandom(32)
    # The JoinService's host is an initialized node of this cluster: PCR 15 carries the mark.
    measurement_secret = derive_measurement_secret(master_key, master_salt)
    assert NodeLock(host.tcti).try_lock(derive_cluster_id(measurement_secret, measurement_salt))
    keys = keyservice_server.KeyServiceServer(
        keyservice_keys.DataKeys(keyservice_keys.MasterSecret(key=master_key, salt=master_salt)),
        ServiceMetrics("keyservice"),
    )
    keys_port = keys.add_port("127.0.0.1:0")
    keys.start()

    config_dir = tmp_path / "join-config"
    config_dir.mkdir()
    (config_dir / joinconfig.VARIANT_FILE).write_bytes(b"qemu-vtpm")
    (config_dir / joinconfig.MEASUREMENTS_FILE).write_text(image.to_json())
    (config_dir / joinconfig.SALT_FILE).write_bytes(measurement_salt)
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
    channel = grpc.insecure_channel(f"127.0.0.1:{keys_port}")
    server, watcher = joinservice_server.build_join_server(
        settings,
        issuer=VtpmIssuer(host.tcti, event_log=host_log),
        validator_factory=joinservice_main.validator_for,
        core=k8s.CoreV1Api(kube_client),
        keyservice=channel,
    )
    port = server.add_port("127.0.0.1:0")
    server.start()
    watcher.start()
    try:
        yield Cluster(
            Endpoint("127.0.0.1", port), master_key, master_salt, measurement_salt, image, kubelet
        )
    finally:
        watcher.stop()
        server.shutdown(grace=1.0)
        channel.close()
        keys.grpc_server.stop(None).wait(5)


def _client(node: NodeParts, cluster: Cluster, event_log: bytes) -> JoinClient:
    return JoinClient(
        metadata=node.metadata,
        connect=join_channel_factory(node.tpm, cluster.image, event_log=event_log, timeout=30),
        node_lock=node.lock,
        state_disk=node.disk,
        installer=node.installer,
        kubelet_files=KubeletFiles(node.directory / "state" / "kubelet"),
        node_state_path=node.node_state_path,
        retry=RETRY,
    )


def test_worker_joins_and_rejoins_through_the_real_joinservice(
    cluster: Cluster, swtpm: Swtpm, tmp_path: Path, kube_client: Any
) -> None:
    from kubernetes import client as k8s

    event_log = _measure(swtpm)
    node = make_node(
        tmp_path / "worker",
        swtpm,
        name="worker-7",
        role=Role.WORKER,
        ip="127.0.0.7",
        endpoints=(cluster.target,),
    )
    outcome = _client(node, cluster, event_log).join(node.initial_key)
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
    key = _client(node, cluster, event_log).rejoin(state)
    assert key == disk_key
    with open_tpm(swtpm.tcti) as esapi:
        _, after = read_pcrs(esapi, (15,))
    assert after[15] == pcrs[15]


def test_bootstrapper_wiring_joins_then_rejoins_after_restart(
    cluster: Cluster, swtpm: Swtpm, tmp_path: Path, kube_client: Any
) -> None:
    """``build_node`` as the command wires it: the join path commits, the init server stops;
    a restarted process on the same vTPM rejoins without a second mark."""
    from kubernetes import client as k8s

    from constellation.bootstrapper.__main__ import build_node
    from constellation.bootstrapper.config import config_from_mapping
    from constellation.bootstrapper.node import CommitPath

    event_log = _measure(swtpm)
    node = make_node(
        tmp_path / "worker",
        swtpm,
        name="worker-8",
        role=Role.WORKER,
        ip="127.0.0.8",
        endpoints=(cluster.target,),
    )
    with node.disk.device.open("r+b") as handle:  # a blank disk, as on first boot
        handle.write(bytes(1 << 20))
    (tmp_path / "eventlog.bin").write_bytes(event_log)
    (tmp_path / "measurements.json").write_text(cluster.image.to_json())
    init_port = _free_port()
    config = config_from_mapping(
        {
            "metadata_path": str(node.metadata.path),
            "state_disk_path": str(node.disk.device),
            "state_dir": str(node.directory / "state"),
            "install_root": str(node.installer.install_root),
            "tpm_tcti": swtpm.tcti,
            "init_port": init_port,
            "join_measurements_path": str(tmp_path / "measurements.json"),
            "event_log_path": str(tmp_path / "eventlog.bin"),
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
    again = restarted.run()
    assert again is not None
    assert again.path == CommitPath.REJOINED
    assert again.cluster_id == outcome.cluster_id
    with open_tpm(swtpm.tcti) as esapi:
        _, after = read_pcrs(esapi, (15,))
    assert after[15] == marked[15]
    plane.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
