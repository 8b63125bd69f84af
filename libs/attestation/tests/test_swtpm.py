"""The swtpm manager: real processes on loopback, stopped by PID, state kept when asked."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from constellation.attestation.swtpm import SwtpmError, SwtpmManager, free_port_pair, start_swtpm
from constellation.attestation.vtpm import open_tpm, read_pcrs

pytestmark = pytest.mark.swtpm


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A stopped child we reaped is gone; an unreaped zombie would still answer signal 0.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_manager_starts_and_stops_instances() -> None:
    with SwtpmManager() as manager:
        instances = manager.start(3)
        assert len({i.port for i in instances}) == 3
        for instance in instances:
            assert instance.ctrl_port == instance.port + 1
            assert instance.tcti == f"swtpm:host=127.0.0.1,port={instance.port}"
            with open_tpm(instance.tcti) as esapi:
                assert read_pcrs(esapi, (0,))[1][0] == bytes(32)
        pids = [i.pid for i in instances]
        dirs = [i.state_dir for i in instances]
    assert not any(_alive(pid) for pid in pids)
    assert not any(d.exists() for d in dirs)


def test_cleanup_happens_when_the_body_fails() -> None:
    pids: list[int] = []

    def failing_body() -> None:
        with SwtpmManager() as manager:
            pids.append(manager.start(1)[0].pid)
            raise RuntimeError("test body failed")

    with pytest.raises(RuntimeError):
        failing_body()
    assert len(pids) == 1
    assert not _alive(pids[0])


def test_given_state_dir_survives_a_restart(tmp_path: Path) -> None:
    first = start_swtpm(tmp_path)
    try:
        from constellation.attestation.nodelock import NodeLock

        assert NodeLock(first.tcti).try_lock(b"cluster")
    finally:
        first.stop()
    assert any(tmp_path.iterdir())
    second = start_swtpm(tmp_path)
    try:
        # startup-clear resets PCRs, like a reboot; the state directory is kept.
        assert not NodeLock(second.tcti).is_initialized()
    finally:
        second.stop()
    assert tmp_path.exists()


def test_stop_is_idempotent(swtpm: object) -> None:
    from constellation.attestation.swtpm import Swtpm

    assert isinstance(swtpm, Swtpm)
    swtpm.stop()
    swtpm.stop()
    assert not swtpm.running()


def test_free_port_pair_is_free() -> None:
    port = free_port_pair()
    for candidate in (port, port + 1):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", candidate))


def test_invalid_requests() -> None:
    with SwtpmManager() as manager:
        with pytest.raises(SwtpmError):
            manager.start(0)
        with pytest.raises(SwtpmError):
            manager.start(2, state_dirs=[Path("/nonexistent")])


def test_swtpm_that_cannot_start_is_a_typed_error(tmp_path: Path) -> None:
    (tmp_path / "tpm2-00.permall").write_bytes(b"corrupt TPM state")
    with pytest.raises(SwtpmError, match="did not become ready"):
        start_swtpm(tmp_path, ready_timeout=2)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SwtpmError, match="state directory"):
        start_swtpm(blocker / "state")
