"""A mini node's vTPM: a detached swtpm keeping its state in the node's ``tpm/`` directory and
serving Unix sockets in the node's short private socket directory, reachable through the TCTI
the node record keeps, however deep the workspace is."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from constellation.attestation.identity import Role
from constellation.attestation.nodelock import NodeLock
from constellation.attestation.swtpm import MAX_SOCKET_PATH_BYTES, tcti_for
from constellation.cli.mini.errors import ProcessStartError
from constellation.cli.mini.node import (
    MiniNode,
    start_swtpm,
    swtpm_socket,
    vtpm_socket_dir,
)
from constellation.cli.mini.processes import ProcessRecord, is_running, stop

pytestmark = pytest.mark.swtpm


@pytest.fixture(autouse=True)
def _require_swtpm() -> None:
    if shutil.which("swtpm") is None:
        pytest.skip("swtpm is not installed (Debian package: swtpm)")


@pytest.fixture(autouse=True)
def _runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short runtime directory of the test's own, removed afterwards whatever happened."""
    runtime = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    yield runtime
    shutil.rmtree(runtime, ignore_errors=True)


def _too_deep(tmp_path: Path) -> Path:
    """A node directory whose ``tpm/sock.ctrl`` would be over the AF_UNIX limit."""
    room = MAX_SOCKET_PATH_BYTES - len(os.fsencode(tmp_path)) - len("//tpm/sock.ctrl")
    return tmp_path / ("n" * (room + 1))


def test_swtpm_serves_the_nodes_private_sockets_and_keeps_state(tmp_path: Path) -> None:
    tpm_dir = tmp_path / "node" / "tpm"
    log = tmp_path / "logs" / "node-swtpm.log"
    record, sock = start_swtpm("node", tpm_dir, log)
    try:
        assert sock == vtpm_socket_dir(tpm_dir) / "sock"
        for private in (tpm_dir, sock.parent, sock.parent.parent):
            assert stat.S_IMODE(private.stat().st_mode) == 0o700
        assert any(tpm_dir.iterdir())  # the TPM state stays with the node
        for path in (sock, sock.with_name("sock.ctrl")):
            assert stat.S_ISSOCK(path.lstat().st_mode)
            assert stat.S_IMODE(path.lstat().st_mode) == 0o600
        assert NodeLock(tcti_for(sock)).try_lock(b"cluster")
        # A second swtpm on the same node would unlink the running one's sockets: refused.
        with pytest.raises(ProcessStartError, match="already serves"):
            start_swtpm("node", tpm_dir, log)
        assert NodeLock(tcti_for(sock)).is_initialized()
    finally:
        stop(record)
    # A reboot: the same directory, the same socket path, PCRs reset by the startup.
    again, same = start_swtpm("node", tpm_dir, log)
    try:
        assert same == sock
        assert not NodeLock(tcti_for(same)).is_initialized()
    finally:
        stop(again)
    assert not is_running(again)
    shutil.rmtree(sock.parent)


def test_the_node_record_keeps_the_socket_path(tmp_path: Path) -> None:
    process = ProcessRecord("n/swtpm", 1, 1, str(tmp_path / "log"))
    node = MiniNode(
        name="mini-worker-0",
        role=Role.WORKER,
        directory=tmp_path,
        swtpm_socket=tmp_path / "tpm" / "sock",
        init_port=9000,
        image_version="v",
        supervisor=process,
    )
    assert node.tcti == f"swtpm:path={tmp_path / 'tpm' / 'sock'}"
    assert "swtpmPort" not in node.to_dict()
    assert MiniNode.from_dict(node.to_dict()) == node


def test_a_workspace_too_deep_for_a_socket_path_still_gets_a_vtpm(tmp_path: Path) -> None:
    """A Unix socket path has at most 107 bytes; the node's sockets do not live under the
    workspace, so its depth does not matter, and two nodes never share a socket directory."""
    deep = _too_deep(tmp_path)
    sock = swtpm_socket(deep / "tpm")
    assert len(os.fsencode(f"{sock}.ctrl")) <= MAX_SOCKET_PATH_BYTES
    assert sock.parent == vtpm_socket_dir(deep / "tpm")
    assert vtpm_socket_dir(tmp_path / "other" / "tpm") != sock.parent
    record, served = start_swtpm("deep", deep / "tpm", tmp_path / "deep-swtpm.log")
    try:
        assert served == sock
        assert NodeLock(tcti_for(served)).try_lock(b"cluster")
    finally:
        stop(record)
        shutil.rmtree(served.parent)


def test_a_socket_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    """The socket directory sits in a shared temporary directory: someone else's (planted
    before the node starts) must not become the node's."""
    tpm_dir = tmp_path / "node" / "tpm"
    planted = vtpm_socket_dir(tpm_dir)
    planted.mkdir(parents=True, exist_ok=True)
    os.chown(planted, 65534, 65534)
    try:
        with pytest.raises(ProcessStartError, match="owned by uid"):
            start_swtpm("node", tpm_dir, tmp_path / "swtpm.log")
    finally:
        shutil.rmtree(planted)
