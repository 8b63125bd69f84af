"""Test support: point a workspace at a loopback HTTP server that plays the API server's Node
listing, to see how the CLI behaves when the API server is away, answers 503, or refuses.

A real kube-apiserver (the ``control_plane`` fixture) is what tests use for the normal case;
it cannot be made to answer 503 on demand, which is what this is for. The answers are the
API's own wire format (a ``v1`` ``NodeList``), read by the real Kubernetes client.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable
from pathlib import Path

from constellation.bootstrapper.atomicfile import SECRET_MODE, write_atomic

CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"


def write_kubeconfig(path: Path, server: str) -> Path:
    """An admin kubeconfig at ``path`` for the API server at ``server`` (``http://...``)."""
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "loopback", "cluster": {"server": server}}],
        "contexts": [{"name": "loopback", "context": {"cluster": "loopback", "user": "admin"}}],
        "current-context": "loopback",
        "users": [{"name": "admin", "user": {"token": "loopback-test-token"}}],
    }
    write_atomic(path, json.dumps(document).encode(), mode=SECRET_MODE)
    return path


def node_list(names: Iterable[str], *, control_planes: Iterable[str] = ()) -> bytes:
    """A ``v1`` ``NodeList`` naming ``names`` (those in ``control_planes`` with the role label)."""
    control = set(control_planes)
    items = [
        {
            "metadata": {
                "name": name,
                "labels": {CONTROL_PLANE_LABEL: ""} if name in control else {},
            }
        }
        for name in names
    ]
    return json.dumps(
        {"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": items}
    ).encode()


def closed_port() -> int:
    """A loopback port nothing listens on (it was bound and released)."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port: int = unused.getsockname()[1]
    return port
