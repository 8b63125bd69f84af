"""The JoinService chart's RBAC, enforced by a real API server, is enough and no more.

The chart's ServiceAccount, Role and RoleBinding are applied to the pinned kube-apiserver
(authorization mode Node,RBAC); a token for that ServiceAccount (TokenRequest, as a pod's
projected token) then drives the JoinService's own API code: disk bindings and bootstrap
tokens must work, and everything else a JoinService has no business doing must be forbidden.
"""

from __future__ import annotations

import secrets
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from constellation.joinservice.bootstrap_token import BootstrapTokens, parse_token
from constellation.joinservice.errors import DiskBindingError
from constellation.joinservice.kubernetes import DiskBindings, binding_name, core_api
from constellation.joinservice.tickets import BindingOutcome

pytestmark = pytest.mark.kube

NAMESPACE = "kube-system"
RBAC_KINDS = ("ServiceAccount", "Role", "RoleBinding")


def _kubectl(kubectl: Path, kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(kubectl), "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(kubeconfig.parent)},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def joinservice_core(
    render: Any, kubectl_binary: Path, control_plane: Any, tmp_path_factory: pytest.TempPathFactory
) -> k8s.CoreV1Api:
    """A CoreV1 client holding only the chart's ServiceAccount token, built like the service's."""
    admin = Path(control_plane.admin_kubeconfig)
    objects = [m for m in render("joinservice") if m["kind"] in RBAC_KINDS]
    assert sorted(m["kind"] for m in objects) == sorted(RBAC_KINDS)
    _kubectl(kubectl_binary, admin, "apply", "-f", "-", stdin=yaml.safe_dump_all(objects))
    (account,) = (m["metadata"]["name"] for m in objects if m["kind"] == "ServiceAccount")
    token = _kubectl(
        kubectl_binary, admin, "create", "token", account, "-n", NAMESPACE, "--duration=10m"
    ).strip()
    config = yaml.safe_load(admin.read_text())
    config["users"] = [{"name": "joinservice", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "joinservice"
    kubeconfig = tmp_path_factory.mktemp("joinservice-sa") / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    kubeconfig.chmod(0o600)
    return core_api(kubeconfig)


def _identity() -> str:
    return secrets.token_hex(32)


def _forbidden(call: Any, *args: Any, **kwargs: Any) -> None:
    with pytest.raises(ApiException) as info:
        call(*args, **kwargs)
    assert info.value.status == 403, info.value.reason


def test_disk_bindings_are_created_confirmed_and_refused(joinservice_core: k8s.CoreV1Api) -> None:
    bindings = DiskBindings(joinservice_core, namespace=NAMESPACE)
    disk, owner = str(uuid.uuid4()), _identity()
    assert bindings.bind(disk, owner).outcome is BindingOutcome.CREATED
    assert bindings.bind(disk, owner).outcome is BindingOutcome.CONFIRMED
    with pytest.raises(DiskBindingError):
        bindings.bind(disk, _identity())
    assert bindings.lookup(str(uuid.uuid4())) is None


def test_bootstrap_tokens_are_created(joinservice_core: k8s.CoreV1Api) -> None:
    issued = BootstrapTokens(joinservice_core).create()
    assert parse_token(issued.token).token_id == issued.token_id


def test_secrets_cannot_be_read_listed_or_deleted(joinservice_core: k8s.CoreV1Api) -> None:
    _forbidden(joinservice_core.read_namespaced_secret, "constellation-mastersecret", NAMESPACE)
    _forbidden(joinservice_core.list_namespaced_secret, NAMESPACE)
    _forbidden(joinservice_core.delete_namespaced_secret, "bootstrap-token-abcdef", NAMESPACE)


def test_bindings_cannot_be_listed_changed_or_deleted(joinservice_core: k8s.CoreV1Api) -> None:
    disk = str(uuid.uuid4())
    DiskBindings(joinservice_core, namespace=NAMESPACE).bind(disk, _identity())
    name = binding_name(disk)
    _forbidden(joinservice_core.list_namespaced_config_map, NAMESPACE)
    _forbidden(joinservice_core.delete_namespaced_config_map, name, NAMESPACE)
    _forbidden(
        joinservice_core.patch_namespaced_config_map, name, NAMESPACE, {"metadata": {"labels": {}}}
    )


def test_no_other_namespace_is_reachable(joinservice_core: k8s.CoreV1Api) -> None:
    body = k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name=f"probe-{secrets.token_hex(4)}"))
    _forbidden(joinservice_core.create_namespaced_config_map, "default", body)
    _forbidden(joinservice_core.read_namespaced_config_map, "kube-root-ca.crt", "default")
    _forbidden(joinservice_core.list_node)
