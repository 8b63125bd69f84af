"""``constellation status`` against a real API server: the platform roots the workspace's
configuration trusts and, separately, those the cluster's join-config holds (what the
JoinService admits nodes with), each as subject and SHA-256 of the root's DER; every node of
either source (registered Nodes, workspace nodes); and, against an API server that is away
(a closed port, a loopback server answering 503), one line saying so and the rest."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from constellation.attestation.identity.ca import PlatformCA
from constellation.attestation.measurements import Measurement, Measurements
from constellation.attestation.testing.platform import cached_platform_ca
from constellation.bootstrapper.metadata import Endpoint
from constellation.cli.config import Provider, default_config
from constellation.cli.loopbackapi import closed_port, write_kubeconfig
from constellation.cli.mini import clusterobjects
from constellation.cli.mini.cluster import kubeconfig_path
from constellation.cli.workspace import ClusterState, NodeRecord, Workspace

pytestmark = pytest.mark.kube

MEASUREMENTS = Measurements({4: Measurement(b"\x04" * 32), 9: Measurement(b"\x09" * 32)})


def _summary(ca: PlatformCA) -> dict[str, str]:
    return {"subject": ca.certificate.subject.rfc4514_string(), "sha256": ca.fingerprint}


def test_status_shows_the_configured_and_the_cluster_platform_roots(
    invoke: Any, control_plane: Any, mini_config: Any, tmp_path: Path
) -> None:
    configured = cached_platform_ca()
    other = PlatformCA.generate("another platform CA")
    workspace = Workspace(tmp_path)
    workspace.save_config(mini_config(MEASUREMENTS), overwrite=False)
    cluster_id = os.urandom(32)
    workspace.save_state(ClusterState(name="mini", cluster_id=cluster_id))
    shutil.copyfile(control_plane.admin_kubeconfig, kubeconfig_path(workspace))
    core = clusterobjects.core_api(control_plane.admin_kubeconfig)
    # The cluster's join-config trusts a second platform too: status shows each source apart.
    roots = (configured.cert_pem + other.cert_pem).decode()
    clusterobjects.write_join_config(core, "qemu-vtpm", MEASUREMENTS, roots)

    result = invoke(tmp_path, "status", "-o", "json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["clusterID"] == base64.b64encode(cluster_id).decode()
    assert summary["platformRoots"] == [_summary(configured)]
    assert summary["joinConfig"]["variant"] == "qemu-vtpm"
    assert summary["joinConfig"]["platformRoots"] == [_summary(configured), _summary(other)]

    text = invoke(tmp_path, "status")
    assert text.code == 0, text.stderr
    assert f"Platform root:       {_summary(configured)['subject']}" in text.stdout
    assert configured.fingerprint in text.stdout


def test_status_without_platform_roots_says_so(
    invoke: Any, control_plane: Any, tmp_path: Path
) -> None:
    workspace = Workspace(tmp_path)
    workspace.save_config(
        default_config(Provider.MINI).with_measurements(MEASUREMENTS), overwrite=False
    )
    workspace.save_state(ClusterState(name="mini", cluster_id=os.urandom(32)))
    shutil.copyfile(control_plane.admin_kubeconfig, kubeconfig_path(workspace))
    core = clusterobjects.core_api(control_plane.admin_kubeconfig)
    clusterobjects.write_join_config(core, "qemu-vtpm", MEASUREMENTS, None)

    summary = json.loads(invoke(tmp_path, "status", "-o", "json").stdout)
    assert summary["platformRoots"] == []
    assert summary["joinConfig"]["platformRoots"] == []
    text = invoke(tmp_path, "status")
    assert text.code == 0, text.stderr
    assert "Platform root:       none configured" in text.stdout


def test_status_lists_registered_and_workspace_nodes_alike(
    invoke: Any, control_plane: Any, mini_config: Any, tmp_path: Path
) -> None:
    from kubernetes import client as k8s

    # Unique names: the session's API server is shared with other tests.
    suffix = os.urandom(4).hex()
    member, stranger, absent = f"member-{suffix}", f"stranger-{suffix}", f"absent-{suffix}"
    workspace = Workspace(tmp_path)
    workspace.save_config(mini_config(MEASUREMENTS), overwrite=False)
    endpoint = Endpoint("127.0.0.1", 30081)
    workspace.save_state(
        ClusterState(
            name="mini",
            cluster_id=os.urandom(32),
            nodes=(NodeRecord(member, "worker", endpoint), NodeRecord(absent, "worker", None)),
        )
    )
    shutil.copyfile(control_plane.admin_kubeconfig, kubeconfig_path(workspace))
    core = clusterobjects.core_api(control_plane.admin_kubeconfig)
    clusterobjects.write_join_config(core, "qemu-vtpm", MEASUREMENTS, None)
    for name in (member, stranger):
        core.create_node(k8s.V1Node(metadata=k8s.V1ObjectMeta(name=name)))
    try:
        result = invoke(tmp_path, "status", "-o", "json")
        text = invoke(tmp_path, "status")
    finally:
        for name in (member, stranger):
            core.delete_node(name)
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["apiServer"] == {"reachable": True, "error": None}
    rows = {row["name"]: row for row in summary["nodes"]}
    assert (rows[member]["registered"], rows[member]["inWorkspace"]) == (True, True)
    assert rows[member]["verifyEndpoint"] == str(endpoint)
    assert rows[member]["status"] == "NotReady"
    assert (rows[absent]["registered"], rows[absent]["inWorkspace"]) == (False, True)
    assert rows[absent]["verifyEndpoint"] is None
    assert (rows[stranger]["registered"], rows[stranger]["inWorkspace"]) == (True, False)
    assert text.code == 0, text.stderr
    lines = {name: line for line in text.stdout.splitlines() for name in rows if name in line}
    assert "none known (cannot be checked)" in lines[stranger]
    assert str(endpoint) in lines[member]


@pytest.mark.parametrize("api", ["closed-port", "answers-503"])
def test_status_with_the_api_server_away_says_so_once_and_shows_the_rest(
    invoke: Any, mini_config: Any, tmp_path: Path, http_answering: Any, api: str
) -> None:
    workspace = Workspace(tmp_path)
    workspace.save_config(mini_config(MEASUREMENTS), overwrite=False)
    cluster_id = os.urandom(32)
    workspace.save_state(
        ClusterState(
            name="mini",
            cluster_id=cluster_id,
            nodes=(NodeRecord("mini-cp-0", "control-plane", Endpoint("127.0.0.1", 30081)),),
        )
    )
    with contextlib.ExitStack() as stack:
        if api == "closed-port":
            port = closed_port()
        else:
            port = stack.enter_context(http_answering(lambda path: (503, b"{}")))
        write_kubeconfig(kubeconfig_path(workspace), f"http://127.0.0.1:{port}")
        result = invoke(tmp_path, "status", "-o", "json")
        text = invoke(tmp_path, "status")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["clusterID"] == base64.b64encode(cluster_id).decode()
    assert summary["apiServer"]["reachable"] is False
    assert f"127.0.0.1:{port}" in summary["apiServer"]["error"]
    assert summary["joinConfig"] is None
    (row,) = summary["nodes"]
    assert (row["name"], row["registered"]) == ("mini-cp-0", None)
    assert text.code == 0, text.stderr
    api_lines = [line for line in text.stdout.splitlines() if "Kubernetes API server" in line]
    assert len(api_lines) == 1
    assert "registered Nodes and join-config unknown" in api_lines[0]
    assert "mini-cp-0" in text.stdout
    for output in (result, text):
        assert "Retrying" not in output.stderr
        assert "constellation status" not in output.stdout + output.stderr
        assert "Traceback" not in output.stderr
