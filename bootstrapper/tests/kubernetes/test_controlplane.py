"""The loopback control plane: real etcd + kube-apiserver, its objects, and its teardown."""

from __future__ import annotations

import dataclasses
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

from constellation.bootstrapper.kubernetes.components import ComponentLock, InstalledComponents
from constellation.bootstrapper.kubernetes.controlplane import (
    ControlPlane,
    ControlPlaneBinaries,
    Ports,
    kubeadm_config,
)
from constellation.bootstrapper.kubernetes.errors import (
    ControlPlaneError,
    ControlPlaneStartError,
    ControlPlaneTimeoutError,
)
from constellation.bootstrapper.testing import processes_mentioning


def test_kubeadm_config_is_loopback_only(tmp_path: Path) -> None:
    ports = Ports.allocate()
    docs = list(
        yaml.safe_load_all(
            kubeadm_config(
                ports=ports,
                pki_dir=tmp_path / "pki",
                etcd_data_dir=tmp_path / "etcd",
                kubernetes_version="v1.36.3",
                node_name="cp-0",
            )
        )
    )
    init, cluster = docs
    assert init["kind"] == "InitConfiguration"
    assert init["localAPIEndpoint"]["bindPort"] == ports.apiserver
    assert cluster["controlPlaneEndpoint"] == f"127.0.0.1:{ports.apiserver}"
    assert "127.0.0.1" in cluster["apiServer"]["certSANs"]
    assert cluster["encryptionAlgorithm"] == "ECDSA-P256"
    assert len({ports.apiserver, ports.etcd_client, ports.etcd_peer, ports.etcd_metrics}) == 4


@pytest.mark.kube
def test_control_plane_serves_the_pinned_version(
    control_plane: ControlPlane, kubernetes_lock: ComponentLock
) -> None:
    version = control_plane.request("GET", "/version")
    assert version["gitVersion"] == kubernetes_lock.kubernetes_version
    assert control_plane.server.startswith("https://127.0.0.1:")
    assert (control_plane.log_dir / "kube-apiserver.log").stat().st_size > 0
    assert stat.S_IMODE(control_plane.directory.stat().st_mode) == 0o700


@pytest.mark.kube
def test_every_kubeconfig_and_process_stays_on_loopback(control_plane: ControlPlane) -> None:
    confs = sorted(control_plane.kubeconfig_dir.glob("*.conf"))
    assert {c.name for c in confs} >= {"admin.conf", "super-admin.conf", "controller-manager.conf"}
    for conf in confs:
        for cluster in yaml.safe_load(conf.read_text())["clusters"]:
            assert cluster["cluster"]["server"] == control_plane.server, conf.name
        assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    for name, pid in control_plane.pids.items():
        assert Path(f"/proc/{pid}").exists(), f"{name} is not running"
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        for flag in ("--bind-address=", "--advertise-address=", "--listen-client-urls="):
            if flag in cmdline:
                assert f"{flag}https://127.0.0.1:" in cmdline or f"{flag}127.0.0.1" in cmdline


@pytest.mark.kube
def test_join_config_configmap_and_secret_round_trip(kube_client: object) -> None:
    core = k8s.CoreV1Api(kube_client)
    core.create_namespaced_config_map(
        "kube-system",
        k8s.V1ConfigMap(
            metadata=k8s.V1ObjectMeta(name="join-config"),
            data={"measurements": '{"15": {"expected": "00", "warnOnly": false}}'},
            binary_data={"measurementSalt": "AAECAw=="},
        ),
    )
    read = core.read_namespaced_config_map("join-config", "kube-system")
    assert read.data["measurements"].startswith('{"15"')
    assert read.binary_data["measurementSalt"] == "AAECAw=="

    core.create_namespaced_secret(
        "kube-system",
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name="constellation-mastersecret"),
            data={"mastersecret": "c2VjcmV0"},
        ),
    )
    secret = core.read_namespaced_secret("constellation-mastersecret", "kube-system")
    assert secret.data["mastersecret"] == "c2VjcmV0"


@pytest.mark.kube
def test_admin_kubeconfig_is_cluster_admin_not_system_masters(kube_client: object) -> None:
    review = k8s.AuthenticationV1Api(kube_client).create_self_subject_review(
        k8s.V1SelfSubjectReview()
    )
    groups = review.status.user_info.groups
    assert "kubeadm:cluster-admins" in groups
    assert "system:masters" not in groups


@pytest.fixture
def binaries(kubernetes_components: InstalledComponents) -> ControlPlaneBinaries:
    return ControlPlaneBinaries.from_components(kubernetes_components)


@pytest.mark.kube
@pytest.mark.slow
def test_teardown_leaves_no_process_and_warm_start_reuses_the_pki(
    tmp_path: Path, binaries: ControlPlaneBinaries, kubernetes_lock: ComponentLock
) -> None:
    directory = tmp_path / "cp"
    plane = ControlPlane(
        directory,
        binaries,
        kubernetes_version=kubernetes_lock.kubernetes_version,
        unsafe_no_fsync=True,
    )
    with plane:
        pids = plane.pids
        assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager"}
        assert sorted(processes_mentioning(str(directory))) == sorted(pids.values())
        ca = plane.ca_cert_path.read_bytes()

        intruder = ControlPlane(
            directory, binaries, kubernetes_version=kubernetes_lock.kubernetes_version
        )
        with pytest.raises(ControlPlaneError, match="in use"):
            intruder.start()
        assert sorted(processes_mentioning(str(directory))) == sorted(pids.values())
        assert (directory / "pids.json").is_file()
    assert processes_mentioning(str(directory)) == []
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

    with plane:  # warm: same directory, same CA, ready again
        assert plane.ca_cert_path.read_bytes() == ca
        assert plane.request("GET", "/version")["gitVersion"] == kubernetes_lock.kubernetes_version
    assert processes_mentioning(str(directory)) == []


@pytest.mark.kube
def test_failed_start_tears_down_what_was_started(
    tmp_path: Path, binaries: ControlPlaneBinaries, kubernetes_lock: ComponentLock
) -> None:
    crashing = tmp_path / "kube-apiserver"
    crashing.write_text("#!/bin/sh\necho 'refusing to start' >&2\nexit 3\n")
    crashing.chmod(0o755)
    directory = tmp_path / "cp"
    plane = ControlPlane(
        directory,
        ControlPlaneBinaries(kubeadm=binaries.kubeadm, etcd=binaries.etcd, kube_apiserver=crashing),
        kubernetes_version=kubernetes_lock.kubernetes_version,
    )
    with pytest.raises(ControlPlaneStartError, match="refusing to start"):
        plane.start()
    assert plane.pids == {}
    assert processes_mentioning(str(directory)) == []


@pytest.mark.kube
def test_readiness_wait_is_bounded_and_cleans_up(
    tmp_path: Path, binaries: ControlPlaneBinaries, kubernetes_lock: ComponentLock
) -> None:
    silent = tmp_path / "kube-apiserver"
    silent.write_text("#!/bin/sh\nexec sleep 313.25\n")  # a command line only this test uses
    silent.chmod(0o755)
    directory = tmp_path / "cp"
    plane = ControlPlane(
        directory,
        ControlPlaneBinaries(kubeadm=binaries.kubeadm, etcd=binaries.etcd, kube_apiserver=silent),
        kubernetes_version=kubernetes_lock.kubernetes_version,
        ready_timeout=3.0,
    )
    with pytest.raises(ControlPlaneTimeoutError, match="not ready"):
        plane.start()
    assert processes_mentioning(str(directory)) == []
    assert processes_mentioning("sleep 313.25") == []


OWNER_SCRIPT = """
import sys
from pathlib import Path
from constellation.bootstrapper.kubernetes.controlplane import ControlPlane, ControlPlaneBinaries
binaries = ControlPlaneBinaries(
    kubeadm=Path(sys.argv[2]), etcd=Path(sys.argv[3]), kube_apiserver=Path(sys.argv[4])
)
plane = ControlPlane(Path(sys.argv[1]), binaries, kubernetes_version=sys.argv[5])
plane.start()
print("ready", flush=True)
sys.stdin.read()  # wait to be killed
"""


@pytest.mark.kube
@pytest.mark.slow
def test_orphans_of_a_killed_owner_are_ended_on_the_next_start(
    tmp_path: Path, binaries: ControlPlaneBinaries, kubernetes_lock: ComponentLock
) -> None:
    directory = tmp_path / "cp"
    owner = subprocess.Popen(
        [
            sys.executable, "-c", OWNER_SCRIPT, str(directory), str(binaries.kubeadm),
            str(binaries.etcd), str(binaries.kube_apiserver), kubernetes_lock.kubernetes_version,
        ],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline() == b"ready\n"
    finally:
        owner.kill()  # SIGKILL: no chance to tear anything down
        owner.wait(timeout=30)
    orphans = processes_mentioning(str(directory))
    assert len(orphans) == 2  # etcd and kube-apiserver survived their owner

    plane = ControlPlane(
        directory,
        ControlPlaneBinaries(
            kubeadm=binaries.kubeadm, etcd=binaries.etcd, kube_apiserver=binaries.kube_apiserver
        ),
        kubernetes_version=kubernetes_lock.kubernetes_version,
    )
    with plane:
        assert sorted(processes_mentioning(str(directory))) == sorted(plane.pids.values())
        assert not set(orphans) & set(plane.pids.values())
    assert processes_mentioning(str(directory)) == []


@pytest.mark.kube
@pytest.mark.slow
def test_a_port_taken_between_choice_and_bind_is_retried_on_new_ports(
    tmp_path: Path, binaries: ControlPlaneBinaries, kubernetes_lock: ComponentLock
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        choices: list[Ports] = []

        def allocate() -> Ports:
            fresh = Ports.allocate()
            choices.append(fresh if choices else dataclasses.replace(fresh, apiserver=taken))
            return choices[-1]

        plane = ControlPlane(
            tmp_path / "cp",
            ControlPlaneBinaries(
                kubeadm=binaries.kubeadm, etcd=binaries.etcd, kube_apiserver=binaries.kube_apiserver
            ),
            kubernetes_version=kubernetes_lock.kubernetes_version,
            allocate_ports=allocate,
        )
        with plane:
            assert len(choices) == 2
            assert plane.ports.apiserver != taken
            assert (
                plane.request("GET", "/version")["gitVersion"] == kubernetes_lock.kubernetes_version
            )
    assert "address already in use" in (tmp_path / "cp" / "logs" / "kube-apiserver.log").read_text()
