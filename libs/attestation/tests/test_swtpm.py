"""The swtpm manager: real processes on private Unix sockets, stopped by PID, state kept when
asked; no TCP port, no access for another user."""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from constellation.attestation.nodelock import NodeLock
from constellation.attestation.swtpm import (
    MAX_SOCKET_PATH_BYTES,
    PROBE_TIMEOUT_S,
    Swtpm,
    SwtpmError,
    SwtpmManager,
    SwtpmSocketPathError,
    answers_tpm_command,
    socket_path,
    start_swtpm,
    tcti_for,
)
from constellation.attestation.vtpm import open_tpm, read_pcrs

pytestmark = pytest.mark.swtpm

NOBODY = 65534
SYSTEM_PYTHON = Path("/usr/bin/python3")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A stopped child we reaped is gone; an unreaped zombie would still answer signal 0.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _socket_inodes(pid: int) -> set[int]:
    """Inodes of every socket the process holds open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        match = re.fullmatch(r"socket:\[(\d+)\]", target)
        if match:
            inodes.add(int(match.group(1)))
    return inodes


def _table_inodes(table: str, inode_column: int) -> dict[int, str]:
    """Inode -> line of a /proc/net table (the header is skipped; absent tables are empty)."""
    try:
        lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
    except FileNotFoundError:
        return {}
    return {int(line.split()[inode_column]): line for line in lines if line.split()}


def test_manager_starts_and_stops_instances() -> None:
    with SwtpmManager() as manager:
        instances = manager.start(3)
        assert len({i.socket_path for i in instances}) == 3
        for instance in instances:
            assert instance.ctrl_path == instance.socket_path.with_name("sock.ctrl")
            assert instance.tcti == f"swtpm:path={instance.socket_path}"
            with open_tpm(instance.tcti) as esapi:
                assert read_pcrs(esapi, (0,))[1][0] == bytes(32)
        pids = [i.pid for i in instances]
        dirs = [i.state_dir for i in instances]
    assert not any(_alive(pid) for pid in pids)
    assert not any(d.exists() for d in dirs)


def test_sockets_are_private_files_in_a_0700_directory(swtpm: Swtpm) -> None:
    directory = swtpm.socket_path.parent
    info = directory.lstat()
    assert stat.S_ISDIR(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o700
    assert info.st_uid == os.geteuid()
    for path in (swtpm.socket_path, swtpm.ctrl_path):
        mode = path.lstat().st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600


def _inet_inodes() -> dict[int, str]:
    tables = ("tcp", "tcp6", "udp", "udp6")
    return {k: v for table in tables for k, v in _table_inodes(table, 9).items()}


def test_listens_on_no_tcp_port_only_on_its_unix_sockets(swtpm: Swtpm) -> None:
    # The probe itself finds a TCP listener: one of this test process.
    with socket.create_server(("127.0.0.1", 0)):
        assert _socket_inodes(os.getpid()) & set(_inet_inodes())
    held = _socket_inodes(swtpm.pid)
    inet = _inet_inodes()
    assert not held & set(inet), [inet[i] for i in held & set(inet)]
    # Positive side: the sockets it does hold are the two Unix sockets at the expected paths.
    unix = _table_inodes("unix", 6)
    paths = {unix[i].split()[-1] for i in held if i in unix and len(unix[i].split()) > 7}
    assert {str(swtpm.socket_path), str(swtpm.ctrl_path)} <= paths


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another uid needs root")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) missing")
@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="no /usr/bin/python3 for another uid")
def test_another_user_cannot_connect(swtpm: Swtpm) -> None:
    probe = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    s.connect(sys.argv[1])\n"
        "except PermissionError:\n"
        "    print('denied')\n"
        "else:\n"
        "    print('connected')\n"
    )

    def connect_as(uid: int, path: Path) -> str:
        result = subprocess.run(
            [
                *("setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"),
                *(str(SYSTEM_PYTHON), "-c", probe, str(path)),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            cwd="/",
        )
        return result.stdout.strip()

    assert connect_as(NOBODY, swtpm.socket_path) == "denied"
    assert connect_as(NOBODY, swtpm.ctrl_path) == "denied"
    # The same probe as the owner connects, so the refusal above is the permission and not
    # a broken probe.
    assert connect_as(os.geteuid(), swtpm.socket_path) == "connected"


def test_ready_means_a_tpm_answers_not_just_a_listening_socket(
    swtpm: Swtpm, tmp_path: Path
) -> None:
    assert answers_tpm_command(swtpm.socket_path)
    # What swtpm looks like before it has loaded its state: listening, answering nothing.
    mute = tmp_path / "mute.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(mute))
        listener.listen()
        started = time.monotonic()
        assert not answers_tpm_command(mute)
        assert time.monotonic() - started < PROBE_TIMEOUT_S * 3
    assert not answers_tpm_command(tmp_path / "absent.sock")


def test_an_existing_directory_is_tightened_to_0700(tmp_path: Path) -> None:
    directory = tmp_path / "tpm"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    instance = start_swtpm(directory)
    try:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert NodeLock(instance.tcti).is_initialized() is False
    finally:
        instance.stop()


def test_a_symlinked_directory_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(SwtpmError, match="must be a real directory"):
        start_swtpm(tmp_path / "link")


@pytest.mark.skipif(os.geteuid() != 0, reason="creating another user's directory needs root")
def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, NOBODY, NOBODY)
    with pytest.raises(SwtpmError, match=f"found uid {NOBODY}"):
        start_swtpm(foreign)


def test_a_socket_path_too_long_for_af_unix_is_a_typed_error(tmp_path: Path) -> None:
    fits = tmp_path / ("d" * (MAX_SOCKET_PATH_BYTES - len(str(tmp_path)) - len("//sock.ctrl")))
    assert len(str(socket_path(fits))) + len(".ctrl") == MAX_SOCKET_PATH_BYTES
    too_deep = fits.with_name(fits.name + "d")
    with pytest.raises(SwtpmSocketPathError, match="at most 107") as caught:
        start_swtpm(too_deep)
    assert "shorter" in str(caught.value)
    assert not too_deep.exists()  # refused before anything was created
    # The longest path that fits really works end to end (the kernel's limit, not ours).
    instance = start_swtpm(fits)
    try:
        with open_tpm(instance.tcti) as esapi:
            assert read_pcrs(esapi, (0,))[1][0] == bytes(32)
    finally:
        instance.stop()


def test_a_comma_in_the_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SwtpmSocketPathError, match="comma"):
        start_swtpm(tmp_path / "a,b")


def test_a_directory_already_served_is_refused_and_its_swtpm_keeps_working(
    tmp_path: Path,
) -> None:
    first = start_swtpm(tmp_path)
    try:
        with pytest.raises(SwtpmError, match="already serves"):
            start_swtpm(tmp_path)
        with open_tpm(first.tcti) as esapi:
            assert read_pcrs(esapi, (0,))[1][0] == bytes(32)
    finally:
        first.stop()


def test_relative_directory_gives_an_absolute_tcti(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    instance = start_swtpm(Path("tpm"))
    try:
        assert instance.socket_path == tmp_path / "tpm" / "sock"
        assert instance.tcti == tcti_for(tmp_path / "tpm" / "sock")
    finally:
        instance.stop()


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


def test_restart_after_a_kill_replaces_the_stale_sockets(tmp_path: Path) -> None:
    first = start_swtpm(tmp_path)
    first.process.kill()
    first.process.wait()
    first.stop()
    assert first.socket_path.exists()  # SIGKILL leaves the socket files behind
    second = start_swtpm(tmp_path)
    try:
        with open_tpm(second.tcti) as esapi:
            assert read_pcrs(esapi, (0,))[1][0] == bytes(32)
    finally:
        second.stop()


def test_stop_is_idempotent(swtpm: Swtpm) -> None:
    swtpm.stop()
    swtpm.stop()
    assert not swtpm.running()


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


def test_thousands_of_client_connections_do_not_stall_it(swtpm: Swtpm) -> None:
    """swtpm writes a line per disconnecting client to stderr; a pipe nobody drained made it
    block after ~2,000 connections (a JoinService quotes once per handshake)."""
    import threading

    from constellation.attestation.vtpm import open_tpm

    done = threading.Event()

    def connect_often() -> None:
        for _ in range(3000):
            with open_tpm(swtpm.tcti) as esapi:
                esapi.get_random(8)
        done.set()

    threading.Thread(target=connect_often, daemon=True).start()
    assert done.wait(120), "swtpm stopped answering"
    assert (swtpm.state_dir / "swtpm.log").stat().st_size > 0
