"""Every node the CLI can name: the Nodes registered in Kubernetes and the nodes the workspace
knows, as one list in which no source can hide a node.

The two sources disagree exactly when something went wrong, which is when the operator most
needs to see it:

- the API server lists the Nodes the cluster runs; a worker that joined after
  ``mini node add`` gave up waiting is there, although the workspace recorded no
  VerificationService for it;
- the workspace (the state file's node records and, in mini mode, ``mini/cluster.json``) lists
  the nodes the CLI created and the VerificationService endpoint of each; a node the
  JoinService refused is there, although it never registered.

:func:`load_inventory` returns their union, each :class:`KnownNode` saying whether it is
registered (``None`` when the registered set is unknown, with the reason in
:attr:`Inventory.registered_error`) and which VerificationService endpoint is known for it.
``verify --all`` and ``status`` render every entry, so a node is either checked or reported as
not checked, never silently left out.

Listing the Nodes is one bounded request with urllib3's own retries switched off (they print
warnings and multiply the wait). Failures are typed: :class:`APIServerUnavailableError` when
the API server did not answer or answered 429/5xx (a restart; a caller that waits, such as
``mini node add``, retries it with backoff within its own timeout), :class:`KubernetesAPIError`
for a definitive answer (403, an unusable kubeconfig) that no retry changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from constellation.bootstrapper.metadata import Endpoint
from constellation.cli.errors import APIServerUnavailableError, KubernetesAPIError
from constellation.cli.mini.cluster import MiniRecord, kubeconfig_path
from constellation.cli.mini.node import MiniNode
from constellation.cli.mini.processes import ProcessRecord
from constellation.cli.workspace import ClusterState, Workspace

LIST_TIMEOUT_S = 10.0
ROLE_LABEL_PREFIX = "node-role.kubernetes.io/"
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


def core_api(kubeconfig: Path) -> tuple[Any, str]:
    """A CoreV1 client for ``kubeconfig`` that makes exactly one attempt per request, and the
    API server's address (for messages)."""
    import yaml
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    if not kubeconfig.is_file():
        raise KubernetesAPIError(
            f"the workspace has no admin kubeconfig ({kubeconfig.name} does not exist)",
            hint="run the command in the workspace `constellation apply` created",
        )
    configuration = k8s.Configuration()
    try:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig), client_configuration=configuration
        )
    except (k8s_config.ConfigException, OSError, ValueError, yaml.YAMLError) as err:
        raise KubernetesAPIError(
            f"the admin kubeconfig {kubeconfig} cannot be used: {_first_line(err)}",
            hint="restore it from the workspace `constellation apply` created",
        ) from None
    except (TypeError, KeyError, AttributeError):  # valid YAML of the wrong shape
        raise KubernetesAPIError(
            f"the admin kubeconfig {kubeconfig} is not a kubeconfig (wrong structure)",
            hint="restore it from the workspace `constellation apply` created",
        ) from None
    configuration.retries = False
    return k8s.CoreV1Api(k8s.ApiClient(configuration)), str(configuration.host)


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def api_failure(action: str, host: str, err: Exception) -> KubernetesAPIError:
    """The typed error for ``err`` raised while ``action`` against the API server at ``host``:
    unavailable (retrying may help) or definitive."""
    import urllib3.exceptions
    from kubernetes.client.exceptions import ApiException

    if isinstance(err, ApiException):
        status = err.status or 0
        answer = f"HTTP {status} {err.reason or ''}".strip()
        if status in _TRANSIENT_STATUS:
            return APIServerUnavailableError(
                f"the Kubernetes API server at {host} answered {answer} to {action}",
                hint="it may be starting or overloaded; try again in a moment",
            )
        return KubernetesAPIError(
            f"the Kubernetes API server at {host} refused to {action}: {answer}",
            hint="check that the admin kubeconfig belongs to this cluster",
        )
    if isinstance(err, urllib3.exceptions.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(err):
        return KubernetesAPIError(
            f"the Kubernetes API server at {host} presented a certificate the admin kubeconfig "
            "does not trust",
            hint="check that the admin kubeconfig belongs to this cluster",
        )
    if isinstance(err, (urllib3.exceptions.HTTPError, OSError, TimeoutError)):
        return APIServerUnavailableError(
            f"the Kubernetes API server at {host} is unreachable: {_describe(err)}",
            hint="check that the control-plane node runs (mini mode: `constellation mini start` "
            "after a stop)",
        )
    return KubernetesAPIError(
        f"the Kubernetes API server at {host} could not {action}: {type(err).__name__}",
        hint="check that the admin kubeconfig belongs to this cluster",
    )


def _describe(err: Exception) -> str:
    """One short phrase for a connection-level failure (urllib3 messages repeat the pool)."""
    import urllib3.exceptions

    if isinstance(err, urllib3.exceptions.NewConnectionError):
        text = str(err)
        marker = "Failed to establish a new connection: "
        return text.split(marker, 1)[1] if marker in text else "connection failed"
    if isinstance(err, (urllib3.exceptions.TimeoutError, TimeoutError)):
        return "the request timed out"
    if isinstance(err, urllib3.exceptions.ProtocolError):
        return "the connection broke off"
    return type(err).__name__


def registered_nodes(kubeconfig: Path, *, timeout: float = LIST_TIMEOUT_S) -> dict[str, Any]:
    """The registered Node objects by name: one request bounded by ``timeout``."""
    core, host = core_api(kubeconfig)
    try:
        nodes = core.list_node(_request_timeout=timeout)
    except Exception as err:  # the client raises urllib3, socket and API errors alike
        raise api_failure("list nodes", host, err) from None
    finally:
        core.api_client.close()
    return {node.metadata.name: node for node in nodes.items}


@dataclass(frozen=True)
class KnownNode:
    """One node of the union, with what each source says about it."""

    name: str
    #: ``control-plane`` or ``worker``; from the workspace, else from the Node's role labels.
    role: str
    in_workspace: bool
    #: Registered as a Node; ``None`` when the registered set is unknown.
    registered: bool | None
    verify_endpoint: Endpoint | None = None
    #: The Node object, when registered.
    node: Any = None
    #: Its mini-mode processes, when mini mode created it.
    mini: MiniNode | None = None
    verification_process: ProcessRecord | None = None


@dataclass(frozen=True)
class Inventory:
    nodes: tuple[KnownNode, ...]
    #: Why the registered set is unknown; ``None`` when the API server listed the Nodes.
    registered_error: KubernetesAPIError | None = None

    @property
    def registered_known(self) -> bool:
        return self.registered_error is None


def _role_from_labels(node: Any) -> str:
    labels = (node.metadata.labels or {}) if node is not None else {}
    roles = {
        key.removeprefix(ROLE_LABEL_PREFIX) for key in labels if key.startswith(ROLE_LABEL_PREFIX)
    }
    return "control-plane" if "control-plane" in roles else "worker"


def combine(
    state: ClusterState | None,
    record: MiniRecord | None,
    registered: dict[str, Any] | None,
    registered_error: KubernetesAPIError | None = None,
) -> Inventory:
    """The union of the workspace's nodes and the registered Nodes, workspace order first.

    A node's VerificationService endpoint comes from the state file (the latest one recorded
    for it), else from the mini record.
    """
    order: list[str] = []
    roles: dict[str, str] = {}
    endpoints: dict[str, Endpoint] = {}
    minis: dict[str, MiniNode] = {}
    processes: dict[str, ProcessRecord] = {}
    if record is not None:
        for mini in record.nodes:
            order.append(mini.name)
            roles[mini.name] = mini.role.value
            minis[mini.name] = mini
        for service in record.verification:  # later entries replace earlier ones
            endpoints[service.node] = service.grpc
            processes[service.node] = service.process
    if state is not None:
        for entry in state.nodes:
            if entry.name not in roles:
                order.append(entry.name)
                roles[entry.name] = entry.role
            if entry.verify_endpoint is not None:
                endpoints[entry.name] = entry.verify_endpoint
    known = [
        KnownNode(
            name=name,
            role=roles[name],
            in_workspace=True,
            registered=None if registered is None else name in registered,
            verify_endpoint=endpoints.get(name),
            node=None if registered is None else registered.get(name),
            mini=minis.get(name),
            verification_process=processes.get(name),
        )
        for name in order
    ]
    for name in sorted(set(registered or {}) - set(order)):
        node = (registered or {})[name]
        known.append(
            KnownNode(
                name=name,
                role=_role_from_labels(node),
                in_workspace=False,
                registered=True,
                node=node,
            )
        )
    return Inventory(tuple(known), registered_error)


def load_inventory(workspace: Workspace, state: ClusterState | None) -> Inventory:
    """The union for ``workspace``: its state, its mini record (if any) and the Nodes its admin
    kubeconfig lists. An API server that cannot be asked makes the registered set unknown; it
    does not end the command."""
    record = MiniRecord.load(workspace) if MiniRecord.exists(workspace) else None
    try:
        registered: dict[str, Any] | None = registered_nodes(kubeconfig_path(workspace))
        error = None
    except KubernetesAPIError as err:
        registered, error = None, err
    return combine(state, record, registered, error)
