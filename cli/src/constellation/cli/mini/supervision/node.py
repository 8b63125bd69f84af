"""The node supervisor: boots one node and keeps it alive (package docstring, ``node``).

What a death means: the swtpm's is the machine's TPM dying, a *reboot*; the bootstrapper's is
a service restart on the same boot, unless it exited with ``EXIT_REBOOT_REQUIRED``
(:mod:`constellation.bootstrapper.exitcodes`): then it can go on only with PCR 15 reset, and
restarting it on the same boot would stop it again, so the node is rebooted. Both reboots go
the same way (:meth:`NodeSupervisor._reboot`), are logged as ``supervisor.reboot`` with their
reason, counted in ``reboots`` and bounded like restarts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import IO

import structlog

from constellation.bootstrapper.exitcodes import EXIT_REBOOT_REQUIRED, exit_status
from constellation.cli.mini.processes import find_marked
from constellation.cli.mini.supervision.child import Child
from constellation.cli.mini.supervision.loop import POLL_S, Supervisor
from constellation.cli.mini.supervision.machine import Machine, MiniMachine
from constellation.cli.mini.supervision.policy import RestartPolicy

SWTPM_READY_TIMEOUT_S = 15.0

_log = structlog.get_logger()


class NodeSupervisor(Supervisor):
    """Boots one node and keeps it alive: restarts on the same boot, reboots, gives up."""

    kind = "node"

    def __init__(
        self,
        unit: str,
        mini_dir: Path,
        policy: RestartPolicy,
        node_dir: Path,
        logs_dir: Path,
        machine: Machine | None = None,
    ) -> None:
        super().__init__(unit, mini_dir, policy)
        self.node_dir = node_dir
        self.logs_dir = logs_dir
        self.name = node_dir.name
        self.machine: Machine = machine or MiniMachine(self.name, node_dir)
        self._logs: list[IO[bytes]] = []
        self.swtpm: Child | None = None
        self.bootstrapper: Child | None = None

    def _open_log(self, process: str) -> IO[bytes]:
        handle = (self.logs_dir / f"{self.name}-{process}.log").open("ab")
        self._logs.append(handle)
        return handle

    def boot(self) -> None:
        """Power on: TPM, firmware measurement, bootstrapper (as ``node.launch_node``)."""
        tpm = self.machine.tpm()
        self.swtpm = Child("swtpm", tpm.argv, log=self._open_log("swtpm"), cwd=tpm.cwd, env=tpm.env)
        pid = self.swtpm.start()
        self.status.child_started("swtpm", pid)
        deadline = time.monotonic() + SWTPM_READY_TIMEOUT_S
        while not self.machine.tpm_answers():
            returncode = self.swtpm.poll()
            if returncode is not None:
                raise RuntimeError(f"swtpm {exit_status(returncode)} during start-up")
            if time.monotonic() >= deadline or self.stopping.is_set():
                raise RuntimeError("swtpm did not answer in time")
            time.sleep(POLL_S)
        self.machine.firmware()
        launch = self.machine.bootstrapper()
        self.bootstrapper = Child(
            "bootstrapper",
            launch.argv,
            log=self._open_log("bootstrapper"),
            cwd=launch.cwd,
            env=launch.env,
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
                status = exit_status(swtpm_exit)
                self._reboot(self.swtpm, status, f"swtpm {status}")
                continue
            returncode = self.bootstrapper.poll()
            if returncode is None and not self.restart_now.is_set():
                self.stopping.wait(POLL_S)
                continue
            if returncode == EXIT_REBOOT_REQUIRED and not self.restart_now.is_set():
                status = exit_status(returncode)
                reason = f"bootstrapper {status}: it can go on only after a reboot"
                self._reboot(self.bootstrapper, status, reason)
                continue
            child = self.bootstrapper
            previous = child.pid
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

    def _reboot(self, cause: Child, status: str, reason: str) -> None:
        """Reboot the machine: stop what runs, then boot again (PCRs reset, image re-measured).

        ``cause`` died (the swtpm) or asked for it (the bootstrapper, ``EXIT_REBOOT_REQUIRED``).
        A boot that ends in a reboot within ``healthy_after_s`` is a quick failure of
        ``reboot``: after ``max_quick_failures`` in a row the node is given up.
        """
        assert self.swtpm is not None
        _log.warning("supervisor.reboot", unit=self.unit, reason=reason, node=self.name)
        self.status.state = "rebooting"
        self.status.save()
        previous = cause.pid
        booted_at = self.swtpm.started_at
        self.shutdown()
        if not self.backoff("reboot", booted_at, reason, previous):
            return
        if not self._boot_with_retries():
            return
        self.status.reboots += 1
        count = self.status.count_restart(cause.name, status)
        self.status.save()
        _log.warning(
            "supervisor.restart",
            unit=self.unit,
            process=cause.name,
            previous_pid=previous,
            status=status,
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
