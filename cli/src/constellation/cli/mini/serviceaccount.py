"""The mini JoinService talks to the API server as its chart's ServiceAccount, not as the admin.

In a cluster the JoinService pod authenticates with the token of the chart's ServiceAccount,
whose Role (``charts/joinservice/templates/rbac.yaml``) allows exactly what the service calls:
creating bootstrap-token Secrets and creating or reading disk-binding ConfigMaps in
kube-system. Mini mode runs the service as a process; giving it the admin kubeconfig would hide
a Role that is too narrow (every join refused with 403 in a real install) and would hand the
one service that faces joining nodes the power to read every Secret.

So :func:`joinservice_kubeconfig` does what Helm and the kubelet do for the pod: it renders the
chart's ServiceAccount, Role and RoleBinding with the pinned helm, creates or updates them
through the API, requests a token for the ServiceAccount (TokenRequest, as for a projected
token) and writes a kubeconfig holding that token and the cluster CA only (mode 0600). Mini has
no kubelet to rotate the token: it is requested for :data:`TOKEN_LIFETIME_S` and requested
again whenever the services start (``apply``, ``recover``).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any, Final

import yaml

from constellation.bootstrapper.atomicfile import SECRET_MODE, write_atomic
from constellation.cli.mini.cluster import find_in_checkout, kubernetes_binaries
from constellation.cli.mini.clusterobjects import (
    API_TIMEOUT_S,
    NAMESPACE,
    api_error,
    core_api,
    upsert,
)
from constellation.cli.mini.errors import ApplyError

CHART: Final = Path("charts") / "joinservice"
RELEASE: Final = "joinservice"
IDENTITY_KINDS: Final = ("ServiceAccount", "Role", "RoleBinding")
TOKEN_LIFETIME_S: Final = 365 * 24 * 3600
HELM_TIMEOUT_S: Final = 60
USER: Final = "joinservice"
# Beside the service's mounted files, under the mini directory that `mini down` removes.
KUBECONFIG_FILE: Final = "joinservice.kubeconfig"


def find_chart() -> Path:
    """The JoinService chart of this checkout."""
    found = find_in_checkout(CHART / "Chart.yaml")
    if found is not None:
        return found.parent
    raise ApplyError(
        f"no {CHART} found: mini mode installs the JoinService's RBAC from its chart",
        hint="run the CLI from the repository checkout",
    )


def render_identity(helm: Path, chart: Path) -> list[dict[str, Any]]:
    """The chart's ServiceAccount, Role and RoleBinding, rendered for kube-system."""
    try:
        # A throw-away HOME: helm keeps its cache and config there, never in the chart or ~.
        with tempfile.TemporaryDirectory(prefix="constellation-helm-") as home:
            result = subprocess.run(
                [str(helm), "template", RELEASE, str(chart), "--namespace", NAMESPACE],
                capture_output=True,
                text=True,
                timeout=HELM_TIMEOUT_S,
                check=False,
                env={"PATH": "/usr/bin:/bin", "HOME": home},
            )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ApplyError(f"helm template {chart} did not run: {err}") from None
    if result.returncode != 0:
        raise ApplyError(f"helm template {chart} failed: {result.stderr.strip()[-500:]}")
    objects = [
        doc
        for doc in yaml.safe_load_all(result.stdout)
        if isinstance(doc, dict) and doc.get("kind") in IDENTITY_KINDS
    ]
    kinds = sorted(str(doc["kind"]) for doc in objects)
    if kinds != sorted(IDENTITY_KINDS):
        raise ApplyError(f"{chart} rendered {kinds}, expected one each of {list(IDENTITY_KINDS)}")
    return objects


def apply_identity(api_client: Any, objects: list[dict[str, Any]]) -> str:
    """Create or update the objects; return the ServiceAccount's name."""
    from kubernetes import client as k8s

    apis = {
        "ServiceAccount": (k8s.CoreV1Api(api_client), "service_account"),
        "Role": (k8s.RbacAuthorizationV1Api(api_client), "role"),
        "RoleBinding": (k8s.RbacAuthorizationV1Api(api_client), "role_binding"),
    }
    account = ""
    for body in objects:
        api, kind = apis[body["kind"]]
        upsert(api, kind, body)
        if body["kind"] == "ServiceAccount":
            account = body["metadata"]["name"]
    return account


def request_token(api_client: Any, account: str) -> str:
    """A token for ``account`` with the API server's default audiences (TokenRequest)."""
    from kubernetes import client as k8s

    request = k8s.AuthenticationV1TokenRequest(
        spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=TOKEN_LIFETIME_S)
    )
    try:
        answer = k8s.CoreV1Api(api_client).create_namespaced_service_account_token(
            account, NAMESPACE, request, _request_timeout=API_TIMEOUT_S
        )
    except Exception as err:
        raise api_error(f"issue a token for ServiceAccount {account}", err) from None
    token = getattr(getattr(answer, "status", None), "token", None)
    if not isinstance(token, str) or not token:
        raise ApplyError(f"the API server returned no token for ServiceAccount {account}")
    return token


def token_kubeconfig(admin_kubeconfig: Path, token: str) -> bytes:
    """The admin kubeconfig's cluster (server, CA) with ``token`` as its only user."""
    try:
        admin = yaml.safe_load(admin_kubeconfig.read_bytes())
        (cluster,) = admin["clusters"]
        name = str(cluster["name"])
        server = cluster["cluster"]["server"]
        ca_data = cluster["cluster"]["certificate-authority-data"]
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        raise ApplyError(
            f"{admin_kubeconfig} does not name one cluster with a server and CA data"
        ) from None
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {"server": server, "certificate-authority-data": ca_data},
            }
        ],
        "users": [{"name": USER, "user": {"token": token}}],
        "contexts": [{"name": USER, "context": {"cluster": name, "user": USER}}],
        "current-context": USER,
    }
    return yaml.safe_dump(document, sort_keys=False).encode()


def joinservice_kubeconfig(admin_kubeconfig: Path, services_dir: Path) -> Path:
    """Install the chart's identity for the JoinService; write and return its kubeconfig."""
    _, installed = kubernetes_binaries(("helm",))
    objects = render_identity(installed.path("helm"), find_chart())
    api_client = core_api(admin_kubeconfig).api_client
    try:
        account = apply_identity(api_client, objects)
        token = request_token(api_client, account)
    finally:
        api_client.close()
    target = services_dir / KUBECONFIG_FILE
    write_atomic(target, token_kubeconfig(admin_kubeconfig, token), mode=SECRET_MODE)
    return target
