"""Running swtpm software TPMs: one process per vTPM, on private Unix sockets, stopped by PID.

Invariant: a vTPM this module starts is reachable only through two Unix sockets inside one
directory that is owned by the current user and has mode 0700 (the sockets themselves are
0600); it listens on no TCP port. Command line (``D`` is that directory, which also holds the
TPM state)::

    swtpm socket --tpm2 --server type=unixio,path=D/sock,mode=0600
                 --ctrl type=unixio,path=D/sock.ctrl,mode=0600
                 --tpmstate dir=D --flags not-need-init,startup-clear

The TCTI of an instance is ``swtpm:path=D/sock``: tpm2-tss's swtpm TCTI (3.2 and later) takes
the data socket's path and finds the control channel at the same path plus ``.ctrl``, so the two
names are fixed by the TCTI, not by us.

Why Unix sockets: on loopback TCP any local process of any user could connect to a node's vTPM
and quote (or extend PCRs) as that node, which is how an attacker obtained a worker's disk key
through a rejoin. A socket file in a 0700 directory is opened only by root and the processes of
the directory's owner, and nothing on the network can reach it at all. That is mini mode's
threat model: root owns the machine anyway, and a node's processes run as the user who owns
its directory. The boundary is that user: nodes started by one user (as ``mini up`` does) are
not separated from each other by it; only one user per node would do that.

Steps of :func:`start_swtpm`, each failing with a typed :class:`SwtpmError`:

1. :func:`prepare_socket_dir` creates the directory 0700, or tightens an existing one to 0700,
   and refuses a symlink or a directory another user owns (that user could swap the sockets).
2. :func:`socket_path` refuses a path the kernel cannot bind: ``sun_path`` holds 107 bytes plus
   the terminating NUL, and the longer control path must fit
   (:class:`SwtpmSocketPathError`); a comma is refused too, as it would end the TCTI's value.
3. If something already answers on the data socket, the start is refused: a second swtpm on the
   same directory would unlink the first one's sockets before failing on the state lock, leaving
   the running vTPM unreachable.
4. swtpm is started; readiness is the TPM answering a command (``TPM2_GetRandom``) on the data
   socket while our process is alive, waited for within a deadline. A connection alone is not
   enough: swtpm listens before it has loaded its state, and one that then fails (a corrupt
   state file) would have looked ready. A start that fails is retried a bounded number of times.

Stopping sends SIGTERM to the recorded PID (swtpm removes its sockets), then SIGKILL after a
grace period (the next swtpm on the directory replaces the stale socket files); a directory the
module created is removed with it. Mini mode and the test fixtures both use this module.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from constellation.attestation.errors import AttestationError

#: The data socket's file name inside the vTPM's directory; the TCTI appends ``CTRL_SUFFIX``.
SOCKET_NAME = "sock"
#: swtpm's stderr, beside its state (see ``start_swtpm``).
LOG_NAME = "swtpm.log"
CTRL_SUFFIX = ".ctrl"
#: ``sizeof(sockaddr_un.sun_path)`` on Linux is 108, one byte of which is the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107
DIR_MODE = 0o700
SOCKET_MODE = 0o600
MAX_START_ATTEMPTS = 5
READY_TIMEOUT_S = 10.0
READY_POLL_S = 0.02
PROBE_TIMEOUT_S = 1.0
STOP_GRACE_S = 5.0


class SwtpmError(AttestationError):
    """swtpm is missing, did not start, or did not become ready in time."""


class SwtpmSocketPathError(SwtpmError):
    """The vTPM's socket path cannot be used: too long for AF_UNIX or not expressible as TCTI."""


def swtpm_binary() -> str:
    """Path of the ``swtpm`` executable, or ``SwtpmError`` naming the package to install."""
    path = shutil.which("swtpm")
    if path is None:
        raise SwtpmError("swtpm not found on PATH (Debian package: swtpm)")
    return path


def ctrl_path(data_socket: Path) -> Path:
    """The control socket that belongs to ``data_socket`` (where the swtpm TCTI looks for it)."""
    return data_socket.with_name(data_socket.name + CTRL_SUFFIX)


def socket_path(directory: Path) -> Path:
    """The absolute data-socket path of a vTPM living in ``directory``, checked to be usable.

    Absolute because the TCTI is handed to processes with other working directories. Checked
    here, before anything starts, so a too-deep workspace fails with advice instead of as an
    opaque "IO failure" from the TCTI later.
    """
    data = directory.absolute() / SOCKET_NAME
    longest = os.fsencode(ctrl_path(data))
    if len(longest) > MAX_SOCKET_PATH_BYTES:
        raise SwtpmSocketPathError(
            f"the vTPM control socket path {ctrl_path(data)} is {len(longest)} bytes; a Unix "
            f"socket path can have at most {MAX_SOCKET_PATH_BYTES}. Use a directory at most "
            f"{len(os.fsencode(directory.absolute())) - (len(longest) - MAX_SOCKET_PATH_BYTES)} "
            f"bytes long (e.g. a shorter workspace path)"
        )
    if "," in str(data):
        raise SwtpmSocketPathError(
            f"the vTPM socket path {data} contains a comma, which ends a value in a TCTI "
            f"configuration string; use a directory without commas"
        )
    return data


def tcti_for(data_socket: Path) -> str:
    """The tpm2-tss TCTI string that reaches the swtpm serving ``data_socket``."""
    return f"swtpm:path={data_socket}"


def prepare_socket_dir(directory: Path) -> Path:
    """Make ``directory`` a private (0700, ours, not a symlink) home for a vTPM's sockets.

    An existing directory is tightened rather than refused: it is the vTPM's own state
    directory, whose TPM seeds deserve 0700 as much as the sockets do.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        info = directory.lstat()
    except OSError as exc:
        raise SwtpmError(
            f"cannot create swtpm state directory {directory}: {exc.strerror or exc}; "
            f"choose a directory the current user can create"
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise SwtpmError(
            f"swtpm state directory {directory} must be a real directory, found a symlink or "
            f"another file type; pass the directory itself"
        )
    if info.st_uid != os.geteuid():
        raise SwtpmError(
            f"swtpm state directory {directory} must be owned by uid {os.geteuid()}, found uid "
            f"{info.st_uid}; another user could replace the vTPM's sockets. Use a directory of "
            f"your own"
        )
    if stat.S_IMODE(info.st_mode) != DIR_MODE:
        try:
            directory.chmod(DIR_MODE)
        except OSError as exc:
            raise SwtpmError(
                f"cannot set swtpm state directory {directory} to mode 0700 (found "
                f"{stat.S_IMODE(info.st_mode):04o}): {exc.strerror or exc}"
            ) from None
    return directory.absolute()


def swtpm_command(binary: str, state_dir: Path, data_socket: Path) -> list[str]:
    """The swtpm command line serving ``data_socket`` (and its ``.ctrl``) with state in
    ``state_dir``; shared with mini mode, which starts swtpm detached."""
    mode = f"mode={SOCKET_MODE:04o}"
    return [
        binary,
        "socket",
        "--tpm2",
        "--server",
        f"type=unixio,path={data_socket},{mode}",
        "--ctrl",
        f"type=unixio,path={ctrl_path(data_socket)},{mode}",
        "--tpmstate",
        f"dir={state_dir}",
        "--flags",
        "not-need-init,startup-clear",
    ]


def accepts_connections(data_socket: Path) -> bool:
    """True if a process listens on ``data_socket`` now (a connect succeeds)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(READY_POLL_S * 10)
        try:
            probe.connect(str(data_socket))
        except OSError:
            return False
    return True


# TPM2_GetRandom(8) without sessions: harmless, and answered only by a started TPM.
_TPM_ST_NO_SESSIONS = 0x8001
_TPM_CC_GET_RANDOM = 0x0000017B
_PROBE_COMMAND = struct.pack(">HIIH", _TPM_ST_NO_SESSIONS, 12, _TPM_CC_GET_RANDOM, 8)
_RESPONSE_HEADER = struct.Struct(">HII")  # tag, size, response code
_MAX_PROBE_RESPONSE = 64


def _receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def answers_tpm_command(data_socket: Path) -> bool:
    """True if a started TPM answers ``TPM2_GetRandom`` on ``data_socket`` with success."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(PROBE_TIMEOUT_S)
        try:
            probe.connect(str(data_socket))
            probe.sendall(_PROBE_COMMAND)
            header = _receive(probe, _RESPONSE_HEADER.size)
            if len(header) != _RESPONSE_HEADER.size:
                return False
            tag, size, code = _RESPONSE_HEADER.unpack(header)
            if tag != _TPM_ST_NO_SESSIONS or size < _RESPONSE_HEADER.size:
                return False
            if size > _MAX_PROBE_RESPONSE:
                return False
            # Drain the rest so swtpm finishes its write before we hang up.
            _receive(probe, size - _RESPONSE_HEADER.size)
        except OSError:
            return False
    return int(code) == 0


def refuse_if_served(data_socket: Path) -> None:
    """Raise if a vTPM already answers on ``data_socket`` (see step 3 of the module doc)."""
    if accepts_connections(data_socket):
        raise SwtpmError(
            f"a swtpm already serves {data_socket}; starting another one on the same directory "
            f"would unlink its sockets. Stop the running one first"
        )


@dataclass
class Swtpm:
    """One running swtpm process."""

    socket_path: Path
    state_dir: Path
    process: subprocess.Popen[bytes]
    owns_state_dir: bool = False
    _stopped: bool = field(default=False, repr=False)

    @property
    def ctrl_path(self) -> Path:
        return ctrl_path(self.socket_path)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def tcti(self) -> str:
        return tcti_for(self.socket_path)

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Terminate this process by PID (SIGKILL after a grace period); idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_GRACE_S)
        if self.owns_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)


def _wait_ready(process: subprocess.Popen[bytes], data_socket: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if answers_tpm_command(data_socket):
            # Nobody served the socket before the start, so a live process of ours is the one.
            return process.poll() is None
        time.sleep(READY_POLL_S)
    return False


def start_swtpm(state_dir: Path | None = None, *, ready_timeout: float = READY_TIMEOUT_S) -> Swtpm:
    """Start one swtpm on Unix sockets in ``state_dir`` and wait until it accepts connections.

    With ``state_dir=None`` a temporary directory is created and removed on ``stop()``; a given
    directory is kept (its TPM state survives a restart, like a node's vTPM across reboots).
    """
    binary = swtpm_binary()
    owns = state_dir is None
    created = Path(tempfile.mkdtemp(prefix="swtpm-")) if state_dir is None else state_dir
    try:
        data_socket = socket_path(created)
        directory = prepare_socket_dir(created)
        refuse_if_served(data_socket)
    except SwtpmError:
        if owns:
            shutil.rmtree(created, ignore_errors=True)
        raise
    last_error = ""
    # swtpm writes a line to stderr for every client that disconnects: into a pipe nobody
    # drains it would block after ~2,000 connections, so stderr goes to a file beside its state.
    log_path = directory / LOG_NAME
    for _ in range(MAX_START_ATTEMPTS):
        with log_path.open("ab") as log:
            start = log.tell()
            process = subprocess.Popen(
                swtpm_command(binary, directory, data_socket),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        if _wait_ready(process, data_socket, ready_timeout):
            return Swtpm(data_socket, directory, process, owns_state_dir=owns)
        if process.poll() is None:
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_GRACE_S)
        with log_path.open("rb") as log:
            log.seek(start)
            last_error = log.read()[-500:].decode(errors="replace").strip()
    if owns:
        shutil.rmtree(directory, ignore_errors=True)
    raise SwtpmError(
        f"swtpm did not become ready on {data_socket} after {MAX_START_ATTEMPTS} attempts: "
        f"{last_error or 'no output'}; check the state directory {directory}"
    )


class SwtpmManager:
    """Starts and always stops a set of swtpm instances; use as a context manager."""

    def __init__(self, *, ready_timeout: float = READY_TIMEOUT_S) -> None:
        self._ready_timeout = ready_timeout
        self._instances: list[Swtpm] = []
        self._lock = threading.Lock()

    @property
    def instances(self) -> tuple[Swtpm, ...]:
        return tuple(self._instances)

    def start(self, count: int = 1, *, state_dirs: list[Path] | None = None) -> list[Swtpm]:
        """Start ``count`` instances (optionally with given state directories)."""
        if count < 1:
            raise SwtpmError(f"cannot start {count} swtpm instances")
        if state_dirs is not None and len(state_dirs) != count:
            raise SwtpmError("need exactly one state directory per instance")
        started: list[Swtpm] = []
        for index in range(count):
            directory = None if state_dirs is None else state_dirs[index]
            instance = start_swtpm(directory, ready_timeout=self._ready_timeout)
            with self._lock:
                self._instances.append(instance)
            started.append(instance)
        return started

    def stop_all(self) -> None:
        """Stop every instance this manager started, even if stopping one fails."""
        with self._lock:
            instances, self._instances = self._instances, []
        errors: list[str] = []
        for instance in instances:
            try:
                instance.stop()
            except (OSError, subprocess.SubprocessError) as exc:
                errors.append(f"pid {instance.pid}: {exc}")
        if errors:
            raise SwtpmError("failed to stop swtpm: " + "; ".join(errors))

    def __enter__(self) -> SwtpmManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop_all()
