"""A mini node's vTPM: a detached swtpm on Unix sockets in the node's private ``tpm/``
directory, reachable through the TCTI the node record keeps, and a workspace too deep for a Unix
socket path refused before anything of the node exists."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from constellation.attestation.identity import Role
from constellation.attestation.measurements import Measurements
from constellation.attestation.nodelock import NodeLock
from constellation.attestation.swtpm import MAX_SOCKET_PATH_BYTES, tcti_for
from constellation.attestation.testing.platform import cached_platform_ca
from constellation.bootstrapper.metadata import Endpoint
from constellation.cli.mini.errors import ProcessStartError
from constellation.cli.mini.node import MiniNode, launch_node, start_swtpm, swtpm_socket
from constellation.cli.mini.processes import ProcessRecord, is_running, stop

pytestmark = pytest.mark.swtpm


@pytest.fixture(autouse=True)
def _require_swtpm() -> None:
    if shutil.which("swtpm") is None:
        pytest.skip("swtpm is not installed (Debian package: swtpm)")


def _too_deep(tmp_path: Path) -> Path:
    """A node directory whose ``tpm/sock.ctrl`` is one byte over the AF_UNIX limit."""
    room = MAX_SOCKET_PATH_BYTES - len(os.fsencode(tmp_path)) - len("//tpm/sock.ctrl")
    return tmp_path / ("n" * (room + 1))


def test_swtpm_serves_the_nodes_private_sockets_and_keeps_state(tmp_path: Path) -> None:
    tpm_dir = tmp_path / "node" / "tpm"
    log = tmp_path / "logs" / "node-swtpm.log"
    record, sock = start_swtpm("node", tpm_dir, log)
    try:
        assert sock == tpm_dir / "sock"
        assert stat.S_IMODE(tpm_dir.stat().st_mode) == 0o700
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


def test_the_node_record_keeps_the_socket_path(tmp_path: Path) -> None:
    process = ProcessRecord("n/swtpm", 1, 1, str(tmp_path / "log"))
    node = MiniNode(
        name="mini-worker-0",
        role=Role.WORKER,
        directory=tmp_path,
        swtpm_socket=tmp_path / "tpm" / "sock",
        init_port=9000,
        image_version="v",
        swtpm=process,
        bootstrapper=process,
    )
    assert node.tcti == f"swtpm:path={tmp_path / 'tpm' / 'sock'}"
    assert "swtpmPort" not in node.to_dict()
    assert MiniNode.from_dict(node.to_dict()) == node


def test_a_workspace_too_deep_for_a_unix_socket_is_refused_before_the_node_exists(
    tmp_path: Path,
) -> None:
    directory = _too_deep(tmp_path)
    with pytest.raises(ProcessStartError, match="at most 107") as caught:
        swtpm_socket(directory / "tpm")
    assert "shorter" in caught.value.hint
    with pytest.raises(ProcessStartError, match="at most 107"):
        launch_node(
            name="mini-worker-0",
            role=Role.WORKER,
            directory=directory,
            image_source=tmp_path / "image",
            image_version="v",
            init_secret_hash=b"",
            joinservice_endpoint=Endpoint("127.0.0.1", 1),
            joinservice_measurements=Measurements({}),
            platform_ca=cached_platform_ca(),
            logs_dir=tmp_path / "logs",
            records=[],
        )
    assert not directory.exists()
    # One byte shorter fits.
    fits = directory.with_name(directory.name[:-1])
    assert swtpm_socket(fits / "tpm") == fits / "tpm" / "sock"
