"""Running swtpm software TPMs: one process per vTPM, on loopback, stopped by PID.

Command line (DESIGN.md §10)::

    swtpm socket --tpm2 --server type=tcp,port=P,bindaddr=127.0.0.1
                 --ctrl type=tcp,port=P+1,bindaddr=127.0.0.1
                 --tpmstate dir=D --flags not-need-init,startup-clear

The TCTI of an instance is ``swtpm:host=127.0.0.1,port=P`` (the TCTI finds the control channel
at P+1, so the two ports are always adjacent). Ports are picked by probing a random free pair;
if another process wins the race for a port, the start is retried a bounded number of times.
Readiness is the data port accepting a connection, waited for within a deadline. Stopping sends
SIGTERM to the recorded PID, then SIGKILL after a grace period; a state directory the manager
created is removed with it. Mini mode and the test fixtures both use this module.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from constellation.attestation.errors import AttestationError

LOOPBACK = "127.0.0.1"
PORT_RANGE = (20000, 60000)
MAX_PORT_PROBES = 200
MAX_START_ATTEMPTS = 5
READY_TIMEOUT_S = 10.0
READY_POLL_S = 0.02
STOP_GRACE_S = 5.0


class SwtpmError(AttestationError):
    """swtpm is missing, did not start, or did not become ready in time."""


def swtpm_binary() -> str:
    """Path of the ``swtpm`` executable, or ``SwtpmError`` naming the package to install."""
    path = shutil.which("swtpm")
    if path is None:
        raise SwtpmError("swtpm not found on PATH (Debian package: swtpm)")
    return path


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port_pair() -> int:
    """A port P such that P and P+1 are currently free on loopback (bounded probing)."""
    low, high = PORT_RANGE
    for _ in range(MAX_PORT_PROBES):
        port = low + secrets.randbelow(high - low - 1)
        if _port_free(port) and _port_free(port + 1):
            return port
    raise SwtpmError(f"no free port pair found on {LOOPBACK} after {MAX_PORT_PROBES} probes")


@dataclass
class Swtpm:
    """One running swtpm process."""

    port: int
    state_dir: Path
    process: subprocess.Popen[bytes]
    owns_state_dir: bool = False
    _stopped: bool = field(default=False, repr=False)

    @property
    def ctrl_port(self) -> int:
        return self.port + 1

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def tcti(self) -> str:
        return f"swtpm:host={LOOPBACK},port={self.port}"

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


def _wait_ready(process: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with (
            contextlib.suppress(OSError),
            socket.create_connection((LOOPBACK, port), timeout=READY_POLL_S * 10),
        ):
            # Someone else may own the port; only our live process counts as ready.
            return process.poll() is None
        time.sleep(READY_POLL_S)
    return False


def start_swtpm(state_dir: Path | None = None, *, ready_timeout: float = READY_TIMEOUT_S) -> Swtpm:
    """Start one swtpm on a free loopback port pair and wait until it accepts connections.

    With ``state_dir=None`` a temporary directory is created and removed on ``stop()``; a given
    directory is kept (its TPM state survives a restart, like a node's vTPM across reboots).
    """
    binary = swtpm_binary()
    owns = state_dir is None
    directory = Path(tempfile.mkdtemp(prefix="swtpm-")) if state_dir is None else state_dir
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SwtpmError(f"cannot create swtpm state directory {directory}: {exc}") from None
    last_error = ""
    for _ in range(MAX_START_ATTEMPTS):
        port = free_port_pair()
        command = [
            binary,
            "socket",
            "--tpm2",
            "--server",
            f"type=tcp,port={port},bindaddr={LOOPBACK}",
            "--ctrl",
            f"type=tcp,port={port + 1},bindaddr={LOOPBACK}",
            "--tpmstate",
            f"dir={directory}",
            "--flags",
            "not-need-init,startup-clear",
        ]
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        if _wait_ready(process, port, ready_timeout):
            return Swtpm(port, directory, process, owns_state_dir=owns)
        if process.poll() is None:
            process.kill()
        try:
            _, stderr = process.communicate(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            stderr = b""
        last_error = stderr.decode(errors="replace").strip()[-500:]
    if owns:
        shutil.rmtree(directory, ignore_errors=True)
    raise SwtpmError(
        f"swtpm did not become ready after {MAX_START_ATTEMPTS} attempts: "
        f"{last_error or 'no output'}"
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
