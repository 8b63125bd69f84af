"""``wait_joined`` against an API server that is briefly away: the wait rides out refused
connections and 5xx answers within its timeout and ends early only on a definitive answer.

The API server is a loopback HTTP server speaking the NodeList format (``loopbackapi``),
read by the real Kubernetes client through :func:`inventory.registered_nodes`, exactly as
``mini node add`` reads it.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from constellation.cli.errors import KubernetesAPIError
from constellation.cli.inventory import registered_nodes
from constellation.cli.loopbackapi import closed_port, node_list, write_kubeconfig
from constellation.cli.mini.cluster import wait_joined
from constellation.cli.mini.errors import JoinTimeoutError


def _lister(kubeconfig: Path) -> Callable[[], set[str]]:
    return lambda: set(registered_nodes(kubeconfig, timeout=2))


def test_the_wait_rides_out_an_api_server_answering_503(
    http_answering: Callable[..., Any], tmp_path: Path
) -> None:
    answers: list[int] = []
    back_at = time.monotonic() + 1.5

    def answer(path: str) -> bytes | tuple[int, bytes]:
        if time.monotonic() < back_at:
            answers.append(503)
            return 503, b'{"kind": "Status", "code": 503}'
        answers.append(200)
        return node_list(["mini-cp-0", "late"])

    with http_answering(answer) as port:
        kubeconfig = write_kubeconfig(tmp_path / "admin.conf", f"http://127.0.0.1:{port}")
        wait_joined(_lister(kubeconfig), {"late"}, timeout=30, alive=lambda: [])
    assert answers[0] == 503
    assert answers[-1] == 200


def test_the_wait_rides_out_a_refused_connection_until_the_api_server_is_back(
    tmp_path: Path,
) -> None:
    port = closed_port()
    kubeconfig = write_kubeconfig(tmp_path / "admin.conf", f"http://127.0.0.1:{port}")
    body = node_list(["late"])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    servers: list[http.server.ThreadingHTTPServer] = []

    def come_back() -> None:
        time.sleep(1.5)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        servers.append(server)
        server.serve_forever()

    threading.Thread(target=come_back, daemon=True).start()
    started = time.monotonic()
    try:
        wait_joined(_lister(kubeconfig), {"late"}, timeout=30)
    finally:
        deadline = time.monotonic() + 5
        while not servers and time.monotonic() < deadline:
            time.sleep(0.05)
        for server in servers:
            server.shutdown()
            server.server_close()
    assert time.monotonic() - started >= 1.5


def test_an_api_server_away_for_the_whole_timeout_is_named_in_the_error(tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "admin.conf", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(JoinTimeoutError, match=r"could not see whether node.* late .*unreachable"):
        wait_joined(_lister(kubeconfig), {"late"}, timeout=1.5)


def test_a_definitive_api_answer_ends_the_wait_at_once(
    http_answering: Callable[..., Any], tmp_path: Path
) -> None:
    with http_answering(lambda path: (403, b"{}")) as port:
        kubeconfig = write_kubeconfig(tmp_path / "admin.conf", f"http://127.0.0.1:{port}")
        started = time.monotonic()
        with pytest.raises(KubernetesAPIError, match="refused"):
            wait_joined(_lister(kubeconfig), {"late"}, timeout=60)
    assert time.monotonic() - started < 5


def test_an_exited_bootstrapper_still_ends_the_wait_while_the_api_server_is_away(
    tmp_path: Path,
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "admin.conf", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(JoinTimeoutError, match="stopped before joining"):
        wait_joined(_lister(kubeconfig), {"late"}, timeout=60, alive=lambda: ["late"])
