"""The pinned helm client works offline and against the loopback API server."""

from __future__ import annotations

import secrets
import socket
import subprocess
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

from constellation.bootstrapper.kubernetes.components import ComponentLock
from constellation.bootstrapper.kubernetes.controlplane import ControlPlane

pytestmark = pytest.mark.kube


def helm(binary: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "helm-home"
    env = {
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        [str(binary), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


@pytest.fixture
def chart(helm_binary: Path, tmp_path: Path) -> Path:
    created = helm(helm_binary, tmp_path, "create", str(tmp_path / "demo"))
    assert created.returncode == 0, created.stderr
    return tmp_path / "demo"


def test_helm_reports_the_pinned_version(
    helm_binary: Path, tmp_path: Path, kubernetes_lock: ComponentLock
) -> None:
    result = helm(helm_binary, tmp_path, "version", "--short")
    assert result.stdout.startswith(kubernetes_lock.component("helm").version)


def test_helm_lint_and_template(helm_binary: Path, chart: Path, tmp_path: Path) -> None:
    lint = helm(helm_binary, tmp_path, "lint", str(chart))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    rendered = helm(helm_binary, tmp_path, "template", "demo", str(chart))
    assert rendered.returncode == 0, rendered.stderr
    kinds = {doc["kind"] for doc in yaml.safe_load_all(rendered.stdout) if doc}
    assert {"Deployment", "Service", "ServiceAccount"} <= kinds


def test_helm_lint_refuses_a_broken_chart(helm_binary: Path, chart: Path, tmp_path: Path) -> None:
    (chart / "templates" / "broken.yaml").write_text("kind: ConfigMap\nmetadata: {{ .Nope.\n")
    lint = helm(helm_binary, tmp_path, "lint", str(chart))
    assert lint.returncode != 0


def test_helm_dry_run_server_reaches_the_api_server(
    helm_binary: Path, chart: Path, tmp_path: Path, control_plane: ControlPlane, kube_client: object
) -> None:
    marker = secrets.token_hex(8)
    k8s.CoreV1Api(kube_client).create_namespaced_config_map(
        "default",
        k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="helm-probe"), data={"marker": marker}),
    )
    # `lookup` returns live objects only when helm talks to the API server (--dry-run=server).
    (chart / "templates" / "probe.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe-copy\ndata:\n"
        '  seen: {{ (lookup "v1" "ConfigMap" "default" "helm-probe").data.marker | quote }}\n'
    )
    kubeconfig = str(control_plane.admin_kubeconfig)
    install = helm(
        helm_binary, tmp_path, "install", "demo", str(chart), "--namespace", "default",
        "--dry-run=server", "--kubeconfig", kubeconfig,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    assert "STATUS: pending-install" in install.stdout
    assert f'seen: "{marker}"' in install.stdout

    client_only = helm(
        helm_binary, tmp_path, "install", "demo", str(chart), "--namespace", "default",
        "--dry-run=client", "--kubeconfig", kubeconfig,
    )  # fmt: skip
    assert marker not in client_only.stdout


def test_helm_dry_run_server_fails_without_a_server(
    helm_binary: Path, chart: Path, tmp_path: Path, control_plane: ControlPlane
) -> None:
    config = yaml.safe_load(control_plane.admin_kubeconfig.read_text())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{dead_port}"
    broken = tmp_path / "dead.conf"
    broken.write_text(yaml.safe_dump(config))
    broken.chmod(0o600)
    result = helm(
        helm_binary, tmp_path, "install", "demo", str(chart), "--dry-run=server",
        "--kubeconfig", str(broken),
    )  # fmt: skip
    assert result.returncode != 0
    assert "connection refused" in result.stderr
