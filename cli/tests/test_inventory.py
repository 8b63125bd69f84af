"""The node inventory: the registered Nodes and the workspace nodes, and typed API-server failures.

The Node listing runs the real Kubernetes client against a loopback HTTP server speaking the
API's NodeList format (503, 403 and a closed port cannot be had from a real API server on
demand); the normal case against a real kube-apiserver is in the verify and status tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from constellation.bootstrapper.metadata import Endpoint
from constellation.cli.errors import APIServerUnavailableError, KubernetesAPIError
from constellation.cli.inventory import combine, registered_nodes
from constellation.cli.loopbackapi import closed_port, node_list, write_kubeconfig
from constellation.cli.workspace import ClusterState, NodeRecord

CP_ENDPOINT = Endpoint("127.0.0.1", 30081)


def _state(*records: NodeRecord) -> ClusterState:
    return ClusterState(name="c", cluster_id=b"\x01" * 32, nodes=records)


class _Node:
    """The attributes of a client ``V1Node`` the inventory reads."""

    def __init__(self, name: str, labels: dict[str, str] | None = None) -> None:
        self.metadata = type("Meta", (), {"name": name, "labels": labels or {}})()


def test_the_union_names_every_node_of_either_source() -> None:
    state = _state(
        NodeRecord("mini-cp-0", "control-plane", CP_ENDPOINT),
        NodeRecord("mini-worker-0", "worker", None),
        NodeRecord("refused", "worker", None),
    )
    registered = {
        "mini-cp-0": _Node("mini-cp-0"),
        "mini-worker-0": _Node("mini-worker-0"),
        "late": _Node("late"),
        "other-cp": _Node("other-cp", {"node-role.kubernetes.io/control-plane": ""}),
    }
    inventory = combine(state, None, registered)
    assert inventory.registered_known
    rows = {n.name: n for n in inventory.nodes}
    assert [n.name for n in inventory.nodes] == [
        "mini-cp-0",
        "mini-worker-0",
        "refused",
        "late",
        "other-cp",
    ]
    assert rows["mini-cp-0"].verify_endpoint == CP_ENDPOINT
    assert rows["mini-cp-0"].registered is True
    assert rows["refused"].registered is False  # the workspace knows it; Kubernetes does not
    assert rows["late"].in_workspace is False  # Kubernetes knows it; the workspace does not
    assert rows["late"].verify_endpoint is None
    assert (rows["late"].role, rows["other-cp"].role) == ("worker", "control-plane")


def test_without_the_registered_set_every_workspace_node_is_unknown() -> None:
    unknown = APIServerUnavailableError("the Kubernetes API server is unreachable")
    inventory = combine(_state(NodeRecord("a", "worker", None)), None, None, unknown)
    assert not inventory.registered_known
    assert [n.registered for n in inventory.nodes] == [None]


def test_registered_nodes_reads_the_api_node_list(
    http_answering: Callable[..., Any], tmp_path: Path
) -> None:
    with http_answering(lambda path: node_list(["a", "b"])) as port:
        kubeconfig = write_kubeconfig(tmp_path / "admin.conf", f"http://127.0.0.1:{port}")
        assert set(registered_nodes(kubeconfig)) == {"a", "b"}


@pytest.mark.parametrize("status", [429, 500, 503])
def test_overload_and_server_errors_are_unavailable(
    http_answering: Callable[..., Any], tmp_path: Path, status: int
) -> None:
    with http_answering(lambda path: (status, b"{}")) as port:
        kubeconfig = write_kubeconfig(tmp_path / "admin.conf", f"http://127.0.0.1:{port}")
        with pytest.raises(APIServerUnavailableError, match=f"HTTP {status}"):
            registered_nodes(kubeconfig)


def test_forbidden_is_a_definitive_answer(
    http_answering: Callable[..., Any], tmp_path: Path
) -> None:
    with http_answering(lambda path: (403, b"{}")) as port:
        kubeconfig = write_kubeconfig(tmp_path / "admin.conf", f"http://127.0.0.1:{port}")
        with pytest.raises(KubernetesAPIError, match="refused to list nodes") as info:
            registered_nodes(kubeconfig)
    assert not isinstance(info.value, APIServerUnavailableError)


def test_a_closed_port_is_unavailable_in_one_attempt_without_retry_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "admin.conf", f"http://127.0.0.1:{closed_port()}")
    with (
        caplog.at_level(logging.DEBUG, logger="urllib3"),
        pytest.raises(APIServerUnavailableError, match=r"unreachable: .*Connection refused"),
    ):
        registered_nodes(kubeconfig)
    assert not [r for r in caplog.records if "Retrying" in r.getMessage()]


@pytest.mark.parametrize(
    "content", [None, b"not: [a kubeconfig", b"[]", b"42", b"clusters: 5\ncontexts: x\n"]
)
def test_a_missing_or_broken_kubeconfig_is_a_definitive_error(
    tmp_path: Path, content: bytes | None
) -> None:
    kubeconfig = tmp_path / "admin.conf"
    if content is not None:
        kubeconfig.write_bytes(content)
    with pytest.raises(KubernetesAPIError) as info:
        registered_nodes(kubeconfig)
    assert not isinstance(info.value, APIServerUnavailableError)
