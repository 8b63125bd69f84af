"""``apply`` tells a node that refused the Init from a node that stopped answering.

The node is the real init server over aTLS on a swtpm-backed node with a LUKS2 header
(``constellation.bootstrapper.testing``). A refusal is a status the node chose (it carries the
``constellation-init-refusal`` trailing metadata): exit 1. A node whose server goes away in
the middle of the stream (as when its process is killed) is "stopped answering": exit 3, and
the message says to run ``apply`` again. The bootstrapper's own crash tests
(``bootstrapper/tests/test_crash_recovery.py``) kill the real process at every step.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from constellation.attestation import atls
from constellation.attestation.swtpm import Swtpm
from constellation.bootstrapper.errors import BootstrapperError
from constellation.bootstrapper.initserver import ControlPlaneParameters, InitServer
from constellation.bootstrapper.metadata import Endpoint
from constellation.bootstrapper.testing import (
    NodeParts,
    component_for,
    init_request,
    make_node,
    uninitialized_node_validator,
)
from constellation.cli.commands import apply
from constellation.cli.commands.apply import (
    EXIT_NODE_STOPPED,
    InitRefusedError,
    NodeStoppedError,
    send_init,
)
from constellation.proto import init_pb2_grpc

pytestmark = pytest.mark.swtpm


@contextmanager
def _serving(node: NodeParts, control_plane: object) -> Iterator[tuple[Endpoint, object]]:
    servicer = InitServer(
        metadata=node.metadata,
        node_lock=node.lock,
        state_disk=node.disk,
        initial_disk_key=node.initial_key,
        installer=node.installer,
        control_plane=control_plane,  # type: ignore[arg-type]
        node_state_path=node.node_state_path,
    )
    server = atls.AttestedServer(node.issuer())
    init_pb2_grpc.add_APIServicer_to_server(servicer, server.grpc_server)
    port = server.add_port("127.0.0.1:0")
    server.start()
    try:
        yield Endpoint("127.0.0.1", port), server
    finally:
        server.stop(None).wait(5)


def _never(parameters: ControlPlaneParameters) -> bytes:
    raise AssertionError("the init must not get this far")


@pytest.fixture
def node(tmp_path: Path, swtpm: Swtpm) -> NodeParts:
    return make_node(tmp_path / "node", swtpm)


@pytest.fixture
def tool(tmp_path: Path) -> Path:
    path = tmp_path / "kubeadm"
    path.write_bytes(b"#!/bin/sh\nexit 0\n")
    return path


def test_a_wrong_init_secret_is_a_refusal(node: NodeParts, tool: Path) -> None:
    request = init_request([component_for("kubeadm", tool, "/bin/kubeadm")], secret=b"wrong")
    with _serving(node, _never) as (endpoint, _), pytest.raises(InitRefusedError) as refused:
        send_init(endpoint, uninitialized_node_validator(), request, progress=lambda _: None)
    assert "the node refused the init: PERMISSION_DENIED" in str(refused.value)
    assert "check the init secret" in refused.value.hint
    assert not isinstance(refused.value, NodeStoppedError)


def test_a_deliberate_unavailable_is_still_a_refusal(
    node: NodeParts, tool: Path, tmp_path: Path
) -> None:
    """UNAVAILABLE is also a transport code; the node's marker makes it a refusal."""
    component = component_for("kubeadm", tool, "/bin/kubeadm")
    tool.unlink()  # the node cannot fetch it: ComponentFetchError -> UNAVAILABLE, on purpose
    request = init_request([component])
    with _serving(node, _never) as (endpoint, _), pytest.raises(InitRefusedError) as refused:
        send_init(endpoint, uninitialized_node_validator(), request, progress=lambda _: None)
    assert "UNAVAILABLE" in str(refused.value)


def test_a_node_that_stops_answering_mid_init_is_not_a_refusal(node: NodeParts, tool: Path) -> None:
    request = init_request([component_for("kubeadm", tool, "/bin/kubeadm")])
    holder: dict[str, object] = {}
    stopped = threading.Event()
    released = threading.Event()

    def dies(parameters: ControlPlaneParameters) -> bytes:
        # The node goes away between two progress messages, as when its process is killed;
        # this thread says nothing more until the client has seen the stream end.
        holder["server"].stop(0)  # type: ignore[attr-defined]
        stopped.set()
        released.wait(30)
        raise BootstrapperError("the node went away")

    seen: list[str] = []
    with _serving(node, dies) as (endpoint, server):
        holder["server"] = server
        try:
            with pytest.raises(NodeStoppedError) as died:
                send_init(endpoint, uninitialized_node_validator(), request, progress=seen.append)
        finally:
            released.set()
    assert stopped.is_set()
    assert any("node-lock" in line for line in seen)  # it died after its point of no return
    message = str(died.value)
    assert "stopped answering during init (crashed or rebooted)" in message
    assert "refused" not in message
    assert "run `constellation apply` again to resume" in died.value.hint
    assert died.value.exit_code == EXIT_NODE_STOPPED


def test_apply_exits_3_when_the_node_stopped_answering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, invoke: object
) -> None:
    def stopped(ctx: object) -> object:
        raise NodeStoppedError("the node stopped answering during init", hint="run apply again")

    monkeypatch.setattr(apply, "run_apply", stopped)
    result = invoke(tmp_path, "apply")  # type: ignore[operator]
    assert result.code == EXIT_NODE_STOPPED
    assert "stopped answering" in result.stderr


def test_apply_exits_1_when_the_node_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, invoke: object
) -> None:
    def refused(ctx: object) -> object:
        raise InitRefusedError("the node refused the init: PERMISSION_DENIED: no", hint="check")

    monkeypatch.setattr(apply, "run_apply", refused)
    result = invoke(tmp_path, "apply")  # type: ignore[operator]
    assert result.code == 1
    assert "refused" in result.stderr


def test_the_help_documents_the_exit_codes(tmp_path: Path, invoke: object) -> None:
    result = invoke(tmp_path, "apply", "--help")  # type: ignore[operator]
    assert "3  the node stopped answering during init" in result.stdout
