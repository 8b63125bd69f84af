"""A full-cluster shutdown end to end, on its own small cluster (1 control plane + 1 worker):
the control-plane node is a registered Node; ``mini stop`` ends every process and keeps the
files; ``mini start`` reboots the nodes (PCRs reset); ``recover`` attests the control-plane
node and sends the master secret; the control plane, the services and the worker come back and
every node verifies; ``mini down`` leaves nothing. Tests run in file order on one cluster."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from constellation.cli.mini.processes import ProcessRecord, is_running
from constellation.cli.testing import Completed, mini_cluster, run_cli

COMMAND_TIMEOUT_S = 600
CONTROL_PLANE = "mini-cp-0"
WORKER = "mini-worker-0"

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.swtpm, pytest.mark.kube]


@dataclass
class Cluster:
    workspace: Path
    summary: dict[str, Any]
    kubectl: Path

    def run(self, *args: str, timeout: float = COMMAND_TIMEOUT_S) -> Completed:
        return run_cli(self.workspace, *args, timeout=timeout)

    def processes(self) -> list[ProcessRecord]:
        record = json.loads((self.workspace / "mini" / "cluster.json").read_text())
        return [ProcessRecord.from_dict(p) for p in record["processes"]]

    def nodes(self) -> dict[str, Any]:
        """``kubectl get nodes`` as the admin, by node name."""
        result = subprocess.run(
            [
                str(self.kubectl),
                f"--kubeconfig={self.workspace / 'constellation-admin.conf'}",
                "get",
                "nodes",
                "-o",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return {n["metadata"]["name"]: n for n in json.loads(result.stdout)["items"]}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with mini_cluster(tmp_path_factory.mktemp("recover-workspace"), workers=1) as up:
        yield Cluster(up.workspace, up.summary, up.kubectl)


def test_the_control_plane_node_is_a_registered_node(cluster: Cluster) -> None:
    rows = {n["name"]: n for n in cluster.summary["nodes"]}
    assert rows[CONTROL_PLANE]["registered"] is True
    assert rows[WORKER]["registered"] is True
    nodes = cluster.nodes()
    assert set(nodes) == {CONTROL_PLANE, WORKER}
    labels = nodes[CONTROL_PLANE]["metadata"]["labels"]
    assert labels["node-role.kubernetes.io/control-plane"] == ""
    assert "node-role.kubernetes.io/control-plane" not in nodes[WORKER]["metadata"].get(
        "labels", {}
    )


def test_stop_ends_every_process_and_keeps_the_files(cluster: Cluster) -> None:
    processes = cluster.processes()
    assert all(is_running(p) for p in processes)
    result = cluster.run("mini", "stop", "-o", "json")
    assert result.code == 0, result.stderr
    assert not any(is_running(p) for p in processes)
    node_state = cluster.workspace / "mini" / "nodes" / CONTROL_PLANE / "state" / "node-state.json"
    assert node_state.is_file()
    assert (cluster.workspace / "constellation-mastersecret.json").is_file()
    # Nothing answers: the cluster is down.
    assert cluster.run("verify", "--timeout", "3").code == 1


def test_start_reboots_and_the_control_plane_waits_for_recovery(cluster: Cluster) -> None:
    result = cluster.run("mini", "start", "-o", "json")
    assert result.code == 0, result.stderr[-4000:]
    assert set(result.json()["nodes"]) == {CONTROL_PLANE, WORKER}
    log = cluster.workspace / "mini" / "logs" / f"{CONTROL_PLANE}-bootstrapper.log"
    assert "node.rejoin_failed" in log.read_text()


def test_recover_brings_the_cluster_back_and_every_node_verifies(cluster: Cluster) -> None:
    result = cluster.run("recover", "-o", "json")
    assert result.code == 0, result.stderr[-4000:]
    answer = result.json()
    assert answer["recovered"] is True
    assert answer["servicesResumed"] is True
    verify = cluster.run("verify", "--all", "-o", "json")
    assert verify.code == 0, verify.stdout[-4000:] + verify.stderr[-2000:]
    report = verify.json()
    assert report["verified"] is True
    assert report["clusterID"] == cluster.summary["clusterID"]
    assert len(report["nodes"]) == 2
    # The same etcd data: both Node objects survived the shutdown.
    assert set(cluster.nodes()) == {CONTROL_PLANE, WORKER}


def test_a_second_recover_finds_no_node_waiting(cluster: Cluster) -> None:
    result = cluster.run("recover", "--timeout", "5")
    assert result.code == 1
    assert "Traceback" not in result.stderr


def test_down_leaves_no_process_and_no_file(cluster: Cluster) -> None:
    processes = cluster.processes()
    result = cluster.run("mini", "down")
    assert result.code == 0, result.stderr
    assert not any(is_running(p) for p in processes)
    assert sorted(os.listdir(cluster.workspace)) == []
