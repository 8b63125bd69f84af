"""``constellation status`` against a real API server: the platform roots the workspace's
configuration trusts and, separately, those the cluster's join-config holds (what the
JoinService admits nodes with), each as subject and SHA-256 of the root's DER."""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from constellation.attestation.identity.ca import PlatformCA
from constellation.attestation.measurements import Measurement, Measurements
from constellation.attestation.testing.platform import cached_platform_ca
from constellation.cli.config import Provider, default_config
from constellation.cli.mini import clusterobjects
from constellation.cli.mini.cluster import kubeconfig_path
from constellation.cli.workspace import ClusterState, Workspace

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
