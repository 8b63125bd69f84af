"""Supervision of mini mode's long-running processes: restart with backoff, log, count.

Until nodes run a kubelet (a later issue), a small Python process plays its part: **one
supervisor per unit**, started detached by the CLI (``python -m constellation.cli.mini.supervisor``)
and recorded in ``mini/cluster.json`` in place of what it supervises. A supervisor is the parent
of its children, so it reaps them (no zombies) and notices a death at once. Two kinds:

- ``unit``: one service process (KeyService, JoinService, a VerificationService). When it
  exits, whatever its status, it is started again with the same command line (same ports,
  same mounted files) after a backoff.
- ``node``: one node, the machine itself. It boots the node as the hypervisor and firmware do
  (swtpm on the node's TPM state, the firmware step measuring the node's image and writing the
  event log, then the bootstrapper from that image) and then keeps it alive:

  * the **bootstrapper** dying alone is a service restart on the same boot: PCRs (including
    the PCR 15 node lock) stay, and the bootstrapper finds its node state and rejoins through
    the JoinService with fresh attestation, as it does after every start;
  * the **swtpm** dying is the machine's TPM dying: the node is *rebooted* (bootstrapper
    stopped, swtpm started again on the same state with PCRs reset, the image measured again,
    the bootstrapper started from it). Nothing is skipped: the event log is rewritten by the
    measurement, and the units attached to this node's TPM (its VerificationService, and the
    JoinService on the control plane: pods of that machine) are told to restart (SIGHUP) so
    they read the new event log.

Restart policy (:class:`RestartPolicy`): exponential backoff, 0.5 s doubling to 30 s, back to
0.5 s once a child ran 30 s; after 5 quick failures in a row (each within 30 s of its start)
the supervisor gives up, stops what it still runs and exits 1, so a crash loop surfaces to the
CLI (``wait_booted`` fails at once) instead of spinning forever.

Every restart is logged as JSON on the unit's log (``event="supervisor.restart"`` with the
process, its PID, exit status and restart count; ``supervisor.reboot`` for a node reboot,
``supervisor.gave_up``) and counted in two files under ``mini/supervision/`` that a person and a
machine can read: ``<unit>.json`` (state, children PIDs and start times, restarts, reboots,
last exit) and ``<unit>.prom`` (Prometheus text format: ``constellation_mini_restarts_total``,
``constellation_mini_node_reboots_total``, ``constellation_mini_unit_up``). Counts continue
from the previous file, so ``mini stop``/``mini start`` keep the totals.

Signals: SIGTERM or SIGINT stop the supervisor (children get SIGTERM, a bounded wait, then
SIGKILL; the supervisor exits 0); SIGHUP restarts the child now (counted as a restart).

Every process mini mode starts, the supervisors and so their children, carries
``CONSTELLATION_MINI_DIR=<workspace>/mini`` in its environment, the marker by which ``mini
down`` finds whatever runs for the workspace (:func:`.processes.find_marked`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import structlog

from constellation.bootstrapper.atomicfile import PUBLIC_MODE, write_atomic
from constellation.cli.mini.processes import (
    MARKER_ENV,
    ProcessRecord,
    find_marked,
    spawn,
    start_time_of,
)

SUPERVISION_DIR = "supervision"
MODULE = "constellation.cli.mini.supervisor"
POLL_S = 0.1
STOP_GRACE_S = 20.0
KILL_WAIT_S = 5.0
SWTPM_READY_TIMEOUT_S = 15.0

_log = structlog.get_logger()


@dataclass(frozen=True)
class RestartPolicy:
    """When to start a dead child again, and when to give up (module docstring)."""

    initial_delay_s: float = 0.5
    max_delay_s: float = 30.0
    healthy_after_s: float = 30.0
    max_quick_failures: int = 5

    def delay(self, previous: float | None, ran_s: float) -> float:
        """The wait before the next start: reset after a healthy run, else doubled (bounded)."""
        if previous is None or ran_s >= self.healthy_after_s:
            return self.initial_delay_s
        return min(previous * 2, self.max_delay_s)


def unit_file_stem(unit: str) -> str:
    """``mini-worker-0/verificationservice`` -> ``mini-worker-0-verificationservice``."""
    return unit.replace("/", "-")


def status_path(mini_dir: Path, unit: str) -> Path:
    return mini_dir / SUPERVISION_DIR / f"{unit_file_stem(unit)}.json"


def read_status(mini_dir: Path, unit: str) -> dict[str, Any] | None:
    """A unit's status document, None if there is none (yet) or it is unreadable."""
    try:
        document = json.loads(status_path(mini_dir, unit).read_bytes())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def exit_status(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit {returncode}"


@dataclass
class UnitStatus:
    """The counters and state of one unit, written after every change (module docstring)."""

    mini_dir: Path
    unit: str
    kind: str
    state: str = "starting"
    restarts: dict[str, int] = field(default_factory=dict)
    reboots: int = 0
    last_exit: str | None = None
    last_restart: str | None = None
    children: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def resume(cls, mini_dir: Path, unit: str, kind: str) -> UnitStatus:
        """Start from the counts of a previous supervisor of this unit, if any."""
        status = cls(mini_dir, unit, kind)
        previous = read_status(mini_dir, unit) or {}
        with contextlib.suppress(AttributeError, TypeError, ValueError):
            status.restarts = {str(k): int(v) for k, v in previous.get("restarts", {}).items()}
            status.reboots = int(previous.get("reboots", 0))
        return status

    def child_started(self, process: str, pid: int) -> None:
        self.children[process] = {"pid": pid, "startTime": start_time_of(pid) or 0}

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "kind": self.kind,
            "state": self.state,
            "supervisorPid": os.getpid(),
            "children": self.children,
            "restarts": self.restarts,
            "reboots": self.reboots,
            "lastExit": self.last_exit,
            "lastRestart": self.last_restart,
        }

    def prometheus(self) -> str:
        unit = self.unit.replace("\\", "\\\\").replace('"', '\\"')
        lines = [
            "# HELP constellation_mini_restarts_total Restarts of a supervised mini-mode process.",
            "# TYPE constellation_mini_restarts_total counter",
        ]
        for process, count in sorted(self.restarts.items()):
            lines.append(
                f'constellation_mini_restarts_total{{unit="{unit}",process="{process}"}} {count}'
            )
        if self.kind == "node":
            lines += [
                "# HELP constellation_mini_node_reboots_total Reboots of a mini node (TPM died).",
                "# TYPE constellation_mini_node_reboots_total counter",
                f'constellation_mini_node_reboots_total{{unit="{unit}"}} {self.reboots}',
            ]
        up = 1 if self.state == "running" else 0
        lines += [
            "# HELP constellation_mini_unit_up Whether the unit's processes run right now.",
            "# TYPE constellation_mini_unit_up gauge",
            f'constellation_mini_unit_up{{unit="{unit}"}} {up}',
        ]
        return "\n".join(lines) + "\n"

    def save(self) -> None:
        path = status_path(self.mini_dir, self.unit)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode(), mode=PUBLIC_MODE)
        write_atomic(path.with_suffix(".prom"), self.prometheus().encode(), mode=PUBLIC_MODE)

    def count_restart(self, process: str, status: str) -> int:
        self.restarts[process] = self.restarts.get(process, 0) + 1
        self.last_exit = f"{process}: {status}"
        self.last_restart = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        return self.restarts[process]


class Child:
    """One child process of a supervisor, in the supervisor's process group.

    Its output goes to the unit's log; stopping is SIGTERM, a bounded wait, then SIGKILL.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log: IO[bytes],
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self._log = log
        self._cwd = cwd
        self._env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> int:
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self._cwd,
            env=self._env,
            close_fds=True,
        )
        self.started_at = time.monotonic()
        return self.process.pid

    def poll(self) -> int | None:
        """The exit code once it exited (the child is reaped), else None."""
        if self.process is None:
            return None
        return self.process.poll()

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=KILL_WAIT_S)


class GiveUpError(Exception):
    """A child failed too often in a row; the supervisor stops (internal to this module)."""


class Supervisor:
    """The shared loop: signals, backoff, counting; subclasses say what to (re)start."""

    kind = "unit"

    def __init__(self, unit: str, mini_dir: Path, policy: RestartPolicy) -> None:
        self.unit = unit
        self.mini_dir = mini_dir
        self.policy = policy
        self.status = UnitStatus.resume(mini_dir, unit, self.kind)
        self.stopping = threading.Event()
        self.restart_now = threading.Event()
        self._delays: dict[str, float] = {}
        self._quick_failures: dict[str, int] = {}

    def install_signal_handlers(self) -> None:
        def stop(signum: int, _frame: object) -> None:
            self.stopping.set()

        def restart(signum: int, _frame: object) -> None:
            self.restart_now.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, restart)

    def backoff(self, process: str, started_at: float, status: str, pid: int | None) -> bool:
        """Log the exit and wait the backoff; False if the supervisor is stopping meanwhile.

        Raises :class:`GiveUpError` after too many quick failures in a row.
        """
        ran = time.monotonic() - started_at
        quick = ran < self.policy.healthy_after_s
        failures = self._quick_failures.get(process, 0) + 1 if quick else 0
        self._quick_failures[process] = failures
        if failures >= self.policy.max_quick_failures:
            self.status.last_exit = f"{process}: {status}"
            _log.error(
                "supervisor.gave_up",
                unit=self.unit,
                process=process,
                status=status,
                quick_failures=failures,
            )
            raise GiveUpError(process)
        delay = self.policy.delay(self._delays.get(process), ran)
        self._delays[process] = delay
        self.status.state = "backoff"
        self.status.save()
        _log.warning(
            "supervisor.child_exited",
            unit=self.unit,
            process=process,
            pid=pid,
            status=status,
            ran_s=round(ran, 1),
            restart_in_s=delay,
        )
        return not self.stopping.wait(delay)

    def restarted(self, child: Child, previous_pid: int | None, status: str) -> None:
        count = self.status.count_restart(child.name, status)
        assert child.process is not None
        self.status.child_started(child.name, child.process.pid)
        self.status.state = "running"
        self.status.save()
        _log.warning(
            "supervisor.restart",
            unit=self.unit,
            process=child.name,
            previous_pid=previous_pid,
            status=status,
            pid=child.process.pid,
            restarts=count,
        )

    def run(self) -> int:
        try:
            self.supervise()
        except GiveUpError:
            self.shutdown()
            self.status.state = "failed"
            self.status.save()
            return 1
        self.shutdown()
        self.status.state = "stopped"
        self.status.save()
        _log.info("supervisor.stopped", unit=self.unit)
        return 0

    def supervise(self) -> None:
        raise NotImplementedError

    def shutdown(self) -> None:
        raise NotImplementedError


class UnitSupervisor(Supervisor):
    """Keeps one service process running (module docstring, ``unit``)."""

    def __init__(
        self, unit: str, mini_dir: Path, policy: RestartPolicy, argv: Sequence[str]
    ) -> None:
        super().__init__(unit, mini_dir, policy)
        self.child = Child(unit.rsplit("/", 1)[-1], argv, log=sys.stdout.buffer)

    def supervise(self) -> None:
        self.child.start()
        assert self.child.process is not None
        self.status.child_started(self.child.name, self.child.process.pid)
        self.status.state = "running"
        self.status.save()
        while not self.stopping.is_set():
            returncode = self.child.poll()
            if self.restart_now.is_set():
                self.restart_now.clear()
                previous = self.child.process.pid if self.child.process else None
                self.child.stop()
                self.child.start()
                self.restarted(self.child, previous, "restart requested")
                continue
            if returncode is None:
                self.stopping.wait(POLL_S)
                continue
            previous = self.child.process.pid if self.child.process else None
            status = exit_status(returncode)
            if not self.backoff(self.child.name, self.child.started_at, status, previous):
                return
            self.child.start()
            self.restarted(self.child, previous, status)

    def shutdown(self) -> None:
        self.child.stop()


class NodeSupervisor(Supervisor):
    """Boots one node and keeps it alive (module docstring, ``node``)."""

    kind = "node"

    def __init__(
        self, unit: str, mini_dir: Path, policy: RestartPolicy, node_dir: Path, logs_dir: Path
    ) -> None:
        super().__init__(unit, mini_dir, policy)
        self.node_dir = node_dir
        self.logs_dir = logs_dir
        self.name = node_dir.name
        self._logs: list[IO[bytes]] = []
        self.swtpm: Child | None = None
        self.bootstrapper: Child | None = None

    def _open_log(self, process: str) -> IO[bytes]:
        handle = (self.logs_dir / f"{self.name}-{process}.log").open("ab")
        self._logs.append(handle)
        return handle

    def boot(self) -> None:
        """Power on: swtpm, firmware measurement, bootstrapper (as ``node.launch_node``)."""
        from constellation.attestation.swtpm import answers_tpm_command
        from constellation.cli.mini.firmware import boot_measure
        from constellation.cli.mini.node import (
            bootstrapper_command,
            bootstrapper_env,
            point_config_at_tpm,
            swtpm_command_for,
        )

        command, socket = swtpm_command_for(self.name, self.node_dir / "tpm")
        self.swtpm = Child("swtpm", command, log=self._open_log("swtpm"))
        pid = self.swtpm.start()
        self.status.child_started("swtpm", pid)
        deadline = time.monotonic() + SWTPM_READY_TIMEOUT_S
        while not answers_tpm_command(socket):
            returncode = self.swtpm.poll()
            if returncode is not None:
                raise RuntimeError(f"swtpm {exit_status(returncode)} during start-up")
            if time.monotonic() >= deadline or self.stopping.is_set():
                raise RuntimeError(f"swtpm did not answer on {socket} in time")
            time.sleep(POLL_S)
        tcti = point_config_at_tpm(self.node_dir, socket)
        boot_measure(tcti, self.node_dir / "image", self.node_dir / "eventlog.bin")
        self.bootstrapper = Child(
            "bootstrapper",
            bootstrapper_command(),
            log=self._open_log("bootstrapper"),
            cwd=self.node_dir,
            env=bootstrapper_env(self.node_dir / "image"),
        )
        pid = self.bootstrapper.start()
        self.status.child_started("bootstrapper", pid)
        self.status.state = "running"
        self.status.save()

    def _restart_attached_units(self) -> None:
        """Tell the services that use this node's TPM and event log to restart (SIGHUP)."""
        event_log = f"--event-log={self.node_dir / 'eventlog.bin'}".encode()
        for marked in find_marked(self.mini_dir):
            if marked.pid == os.getpid() or not marked.is_supervisor:
                continue
            if event_log in marked.cmdline:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(marked.pid, signal.SIGHUP)
                _log.info("supervisor.restart_requested", unit=self.unit, pid=marked.pid)

    def supervise(self) -> None:
        if not self._boot_with_retries():
            return
        while not self.stopping.is_set():
            assert self.swtpm is not None
            assert self.bootstrapper is not None
            swtpm_exit = self.swtpm.poll()
            if swtpm_exit is not None:
                self._reboot(exit_status(swtpm_exit))
                continue
            returncode = self.bootstrapper.poll()
            if returncode is None and not self.restart_now.is_set():
                self.stopping.wait(POLL_S)
                continue
            child = self.bootstrapper
            previous = child.process.pid if child.process else None
            if self.restart_now.is_set():
                self.restart_now.clear()
                child.stop()
                status = "restart requested"
            else:
                assert returncode is not None
                status = exit_status(returncode)
                if not self.backoff(child.name, child.started_at, status, previous):
                    return
            child.start()
            self.restarted(child, previous, status)

    def _boot_with_retries(self) -> bool:
        """Boot; a failed boot is retried with backoff. False if stopping meanwhile."""
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                self.boot()
                return True
            except Exception as err:  # any failed boot is retried with backoff (bounded)
                _log.error("supervisor.boot_failed", unit=self.unit, error=str(err))
                self.shutdown()
                if not self.backoff("boot", started, f"failed: {err}", None):
                    return False
        return False

    def _reboot(self, swtpm_status: str) -> None:
        """The TPM died: stop the bootstrapper, then boot the machine again (PCRs reset)."""
        assert self.bootstrapper is not None
        assert self.swtpm is not None
        _log.warning(
            "supervisor.reboot", unit=self.unit, reason=f"swtpm {swtpm_status}", node=self.name
        )
        self.status.state = "rebooting"
        self.status.save()
        previous = self.swtpm.process.pid if self.swtpm.process else None
        started_at = self.swtpm.started_at
        self.shutdown()
        if not self.backoff("swtpm", started_at, swtpm_status, previous):
            return
        if not self._boot_with_retries():
            return
        self.status.reboots += 1
        count = self.status.count_restart("swtpm", swtpm_status)
        self.status.save()
        _log.warning(
            "supervisor.restart",
            unit=self.unit,
            process="swtpm",
            previous_pid=previous,
            status=swtpm_status,
            restarts=count,
            reboots=self.status.reboots,
        )
        self._restart_attached_units()

    def shutdown(self) -> None:
        for child in (self.bootstrapper, self.swtpm):
            if child is not None:
                child.stop()
        for handle in self._logs:
            handle.close()
        self._logs.clear()


# -- what the CLI calls ------------------------------------------------------------------------


def supervisor_env(mini_dir: Path) -> dict[str, str]:
    return {**os.environ, MARKER_ENV: str(mini_dir.resolve())}


def spawn_unit(unit: str, argv: Sequence[str], *, mini_dir: Path, log_path: Path) -> ProcessRecord:
    """Start ``argv`` under a detached unit supervisor; the record is the supervisor's."""
    return spawn(
        unit,
        [sys.executable, "-m", MODULE, "unit", "--unit", unit, "--mini-dir", str(mini_dir),
         "--", *argv],
        log_path=log_path,
        env=supervisor_env(mini_dir),
    )  # fmt: skip


def spawn_node(name: str, node_dir: Path, *, mini_dir: Path, logs_dir: Path) -> ProcessRecord:
    """Boot the node in ``node_dir`` under a detached node supervisor (its record)."""
    return spawn(
        f"{name}/node",
        [sys.executable, "-m", MODULE, "node", "--unit", f"{name}/node",
         "--mini-dir", str(mini_dir), "--node-dir", str(node_dir), "--logs-dir", str(logs_dir)],
        log_path=logs_dir / f"{name}-supervisor.log",
        env=supervisor_env(mini_dir),
    )  # fmt: skip


def main(argv: Sequence[str] | None = None, *, policy: RestartPolicy | None = None) -> int:
    from constellation.attestation.service.logging import configure_logging

    parser = argparse.ArgumentParser(prog="python -m " + MODULE, description=__doc__)
    sub = parser.add_subparsers(dest="kind", required=True)
    unit = sub.add_parser("unit", help="supervise one service process")
    unit.add_argument("--unit", required=True)
    unit.add_argument("--mini-dir", type=Path, required=True)
    unit.add_argument("command", nargs=argparse.REMAINDER)
    node = sub.add_parser("node", help="boot one node and keep it alive")
    node.add_argument("--unit", required=True)
    node.add_argument("--mini-dir", type=Path, required=True)
    node.add_argument("--node-dir", type=Path, required=True)
    node.add_argument("--logs-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    configure_logging("info", stream=sys.stdout)
    policy = policy or _policy_from_env()
    supervisor: Supervisor
    if args.kind == "unit":
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            parser.error("a command to supervise is required after --")
        supervisor = UnitSupervisor(args.unit, args.mini_dir, policy, command)
    else:
        supervisor = NodeSupervisor(args.unit, args.mini_dir, policy, args.node_dir, args.logs_dir)
    supervisor.install_signal_handlers()
    return supervisor.run()


POLICY_ENV = "CONSTELLATION_MINI_RESTART_POLICY"


def _policy_from_env() -> RestartPolicy:
    """The default policy, or one from ``$CONSTELLATION_MINI_RESTART_POLICY`` (JSON; tests)."""
    raw = os.environ.get(POLICY_ENV)
    if not raw:
        return RestartPolicy()
    try:
        fields = json.loads(raw)
        return RestartPolicy(**{k: type(getattr(RestartPolicy(), k))(v) for k, v in fields.items()})
    except (ValueError, TypeError, AttributeError):
        return RestartPolicy()


if __name__ == "__main__":
    sys.exit(main())
