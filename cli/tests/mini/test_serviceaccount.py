"""The mini JoinService's identity: its chart's ServiceAccount and Role, on a real API server."""

from __future__ import annotations

import base64
import secrets
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from constellation.cli.mini import serviceaccount
from constellation.cli.mini.errors import ApplyError
from constellation.joinservice.kubernetes import DiskBindings, core_api
from constellation.joinservice.tickets import BindingOutcome


def test_token_kubeconfig_keeps_the_cluster_and_holds_only_the_token(tmp_path: Path) -> None:
    admin = tmp_path / "admin.conf"
    ca = base64.b64encode(b"ca certificate").decode()
    admin.write_text(
        yaml.safe_dump(
            {
                "clusters": [
                    {
                        "name": "mini",
                        "cluster": {
                            "server": "https://127.0.0.1:6443",
                            "certificate-authority-data": ca,
                        },
                    }
                ],
                "users": [{"name": "admin", "user": {"client-key-data": "QURNSU4gS0VZ"}}],
            }
        )
    )
    document = yaml.safe_load(serviceaccount.token_kubeconfig(admin, "the-token"))
    assert document["clusters"] == [
        {
            "name": "mini",
            "cluster": {"server": "https://127.0.0.1:6443", "certificate-authority-data": ca},
        }
    ]
    assert document["users"] == [{"name": "joinservice", "user": {"token": "the-token"}}]
    assert "QURNSU4gS0VZ" not in serviceaccount.token_kubeconfig(admin, "the-token").decode()


@pytest.mark.parametrize(
    "content",
    [
        "",
        "clusters: []",
        "clusters: [{name: a, cluster: {server: x}}]",
        "clusters: [{cluster: {server: x, certificate-authority-data: eA==}}]",
        "{{{",
    ],
)
def test_token_kubeconfig_refuses_an_admin_kubeconfig_without_one_usable_cluster(
    tmp_path: Path, content: str
) -> None:
    admin = tmp_path / "admin.conf"
    admin.write_text(content)
    with pytest.raises(ApplyError, match="one cluster"):
        serviceaccount.token_kubeconfig(admin, "the-token")


def test_render_identity_refuses_a_chart_without_the_rbac_objects(
    helm_binary: Path, tmp_path: Path
) -> None:
    chart = tmp_path / "joinservice"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: joinservice\nversion: 0.1.0\n")
    (chart / "templates" / "sa.yaml").write_text(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: joinservice\n"
    )
    with pytest.raises(ApplyError, match="expected one each"):
        serviceaccount.render_identity(helm_binary, chart)


@pytest.mark.kube
def test_the_joinservice_kubeconfig_can_bind_disks_and_cannot_read_secrets(
    control_plane: Any, tmp_path: Path
) -> None:
    kubeconfig = serviceaccount.joinservice_kubeconfig(control_plane.admin_kubeconfig, tmp_path)
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
    assert "client-key-data" not in kubeconfig.read_text()
    core = core_api(kubeconfig)
    binding = DiskBindings(core, namespace="kube-system").bind(
        str(uuid.uuid4()), secrets.token_hex(32)
    )
    assert binding.outcome is BindingOutcome.CREATED
    with pytest.raises(ApiException) as refused:
        core.list_namespaced_secret("kube-system")
    assert refused.value.status == 403
    # Installing again (recover restarts the services) updates in place and issues a new token.
    again = serviceaccount.joinservice_kubeconfig(control_plane.admin_kubeconfig, tmp_path)
    assert again == kubeconfig
    DiskBindings(core_api(again), namespace="kube-system").lookup(str(uuid.uuid4()))
