"""Detached mini-mode processes, recorded so that ``mini down`` ends exactly those.

Every process ``mini up`` starts (swtpm, bootstrapper, services) runs in its own session (so
it outlives the CLI and a terminal's hang-up) with its output in a log file. The record keeps
its PID **and** its start time (field 22 of ``/proc/<pid>/stat``, clock ticks since boot):
before a signal is sent the pair is checked again, so a PID the kernel reused for somebody
else's process is never touched. Stopping sends SIGTERM to the process, waits a bounded time,
then SIGKILLs the process group the process leads (its session, which we created), so children
(the first node's etcd and kube-apiserver) cannot outlive it.

Records are not the only way back to a process: a supervisor restarts its children under new
PIDs, a person may restart a service by hand, and a bootstrapper's control-plane children run
in sessions of their own. So every process mini mode starts carries the marker
``CONSTELLATION_MINI_DIR=<workspace>/mini`` in its environment (inherited by its children), and
:func:`find_marked` finds, under ``/proc``, every process of *this user* that carries the
marker for the workspace or names the workspace's ``mini/`` directory in its command line or
working directory (a process restarted by hand from the logged command line).
:func:`stop_marked` ends them, supervisors first so that nothing is restarted while it runs,
each by PID only while its start time is still the one seen, never the caller or its ancestors.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from constellation.cli.mini.errors import ProcessStartError

STOP_GRACE_S = 20.0
KILL_WAIT_S = 5.0
POLL_S = 0.05
_STAT_STARTTIME_FIELD = 22
MARKER_ENV = "CONSTELLATION_MINI_DIR"
# The supervisors' module, and its name before it became a package: `down` must still stop
# (first) the supervisors an earlier version started.
SUPERVISOR_MODULES = (b"constellation.cli.mini.supervision", b"constellation.cli.mini.supervisor")


@dataclass(frozen=True)
class ProcessRecord:
    """A process mini mode started: a name for people, PID + start time for identity."""

    name: str
    pid: int
    start_time: int
    log: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "pid": self.pid, "startTime": self.start_time, "log": self.log}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProcessRecord:
        return cls(str(data["name"]), int(data["pid"]), int(data["startTime"]), str(data["log"]))


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    _, _, rest = text.rpartition(")")
    return ["", "", *rest.split()]


def start_time_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    if fields is None or len(fields) <= _STAT_STARTTIME_FIELD - 1:
        return None
    return int(fields[_STAT_STARTTIME_FIELD - 1])


def is_running(record: ProcessRecord) -> bool:
    """True if ``record``'s process still exists (not a zombie) and is the one we started."""
    fields = _stat_fields(record.pid)
    if fields is None:
        return False
    state = fields[2]
    if state in ("Z", "X"):
        return False
    return int(fields[_STAT_STARTTIME_FIELD - 1]) == record.start_time


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    mini_dir: Path | None = None,
) -> ProcessRecord:
    """Start ``argv`` detached (own session, stdin closed, output appended to ``log_path``).

    With ``mini_dir`` the process carries the workspace's marker (module docstring).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if mini_dir is not None:
        env = {**(os.environ if env is None else env), MARKER_ENV: str(mini_dir.resolve())}
    try:
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,
                close_fds=True,
            )
    except OSError as err:
        raise ProcessStartError(f"cannot start {name} ({argv[0]}): {err.strerror or err}") from None
    started = start_time_of(process.pid)
    if started is None:
        process.wait(timeout=KILL_WAIT_S)
        raise ProcessStartError(
            f"{name} exited immediately (exit code {process.returncode})",
            hint=f"see its log {log_path}",
        )
    # The Popen object is dropped on purpose: the process outlives this CLI invocation (a
    # process that dies while the CLI still runs is reaped by subprocess's own bookkeeping).
    return ProcessRecord(name, process.pid, started, str(log_path))


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or fields[2] in ("Z", "X"):
            continue
        with contextlib.suppress(IndexError, ValueError):
            if int(fields[4]) == pgid:
                members.append(int(entry.name))
    return members


def stop(record: ProcessRecord, *, grace: float = STOP_GRACE_S) -> bool:
    """End ``record``'s process (and its process group); False if it was already gone.

    The identity check comes first: a PID that now belongs to another process is left alone.
    """
    if not is_running(record):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and is_running(record):
        time.sleep(POLL_S)
    # The group id is the PID of the session leader we started; members are our descendants.
    leftovers = _group_members(record.pid)
    if is_running(record) or leftovers:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.pid, signal.SIGKILL)
        deadline = time.monotonic() + KILL_WAIT_S
        while time.monotonic() < deadline and (is_running(record) or _group_members(record.pid)):
            time.sleep(POLL_S)
    return True


def wait_for(record: ProcessRecord, timeout: float) -> None:
    """Wait until ``record`` exited (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and is_running(record):
        time.sleep(POLL_S)


@dataclass(frozen=True)
class MarkedProcess:
    """A live process of this user that belongs to a workspace's mini cluster."""

    pid: int
    start_time: int
    cmdline: bytes

    @property
    def is_supervisor(self) -> bool:
        return any(module in self.cmdline for module in SUPERVISOR_MODULES)

    @property
    def name(self) -> str:
        argv = [a for a in self.cmdline.split(b"\0") if a]
        return os.path.basename(argv[0].decode(errors="replace")) if argv else "?"

    def still_running(self) -> bool:
        return is_running(ProcessRecord(self.name, self.pid, self.start_time, ""))


def _ancestors() -> set[int]:
    pids = set()
    pid = os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        fields = _stat_fields(pid)
        if fields is None:
            break
        try:
            pid = int(fields[3])
        except (IndexError, ValueError):
            break
    return pids


def _belongs(entry: Path, mini_dir: str) -> bytes | None:
    """The command line of ``entry`` if it belongs to ``mini_dir``'s cluster, else None."""
    try:
        cmdline = (entry / "cmdline").read_bytes()
        environ = (entry / "environ").read_bytes()
    except OSError:
        return None
    marker = f"{MARKER_ENV}={mini_dir}".encode()
    if marker in environ.split(b"\0"):
        return cmdline
    inside = (mini_dir + "/").encode()
    if any(arg == mini_dir.encode() or inside in arg for arg in cmdline.split(b"\0")):
        return cmdline
    try:
        cwd = os.readlink(entry / "cwd")
    except OSError:
        return None
    if cwd == mini_dir or cwd.startswith(mini_dir + "/"):
        return cmdline
    return None


def find_marked(mini_dir: Path) -> list[MarkedProcess]:
    """Every live process of this user that belongs to the cluster in ``mini_dir`` (module
    docstring), except the caller and its ancestors."""
    directory = str(mini_dir.resolve())
    uid = os.getuid()
    skip = _ancestors()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
        except OSError:
            continue
        cmdline = _belongs(entry, directory)
        if cmdline is None:
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or fields[2] in ("Z", "X"):
            continue
        found.append(
            MarkedProcess(int(entry.name), int(fields[_STAT_STARTTIME_FIELD - 1]), cmdline)
        )
    return found


def stop_marked(mini_dir: Path, *, grace: float = STOP_GRACE_S) -> list[str]:
    """End every process :func:`find_marked` finds: supervisors first, then the rest.

    Each round sends SIGTERM, waits (bounded) and SIGKILLs what is left; a process is
    signalled only while its start time is still the one seen. Returns what was ended as
    ``name (pid N)``.
    """
    ended: list[str] = []
    for supervisors in (True, False):
        targets = [p for p in find_marked(mini_dir) if p.is_supervisor is supervisors]
        for target in targets:
            if target.still_running():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(target.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(t.still_running() for t in targets):
            time.sleep(POLL_S)
        for target in targets:
            if target.still_running():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(target.pid, signal.SIGKILL)
            ended.append(f"{target.name} (pid {target.pid})")
        deadline = time.monotonic() + KILL_WAIT_S
        while time.monotonic() < deadline and any(t.still_running() for t in targets):
            time.sleep(POLL_S)
    return ended
