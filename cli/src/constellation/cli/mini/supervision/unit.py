"""The unit supervisor: keeps one service process running (package docstring, ``unit``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from constellation.bootstrapper.exitcodes import exit_status
from constellation.cli.mini.supervision.child import Child
from constellation.cli.mini.supervision.loop import POLL_S, Supervisor
from constellation.cli.mini.supervision.policy import RestartPolicy


class UnitSupervisor(Supervisor):
    """Restarts its one child whenever it exits, with backoff; SIGHUP restarts it now."""

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
                previous = self.child.pid
                self.child.stop()
                self.child.start()
                self.restarted(self.child, previous, "restart requested")
                continue
            if returncode is None:
                self.stopping.wait(POLL_S)
                continue
            previous = self.child.pid
            status = exit_status(returncode)
            if not self.backoff(self.child.name, self.child.started_at, status, previous):
                return
            self.child.start()
            self.restarted(self.child, previous, status)

    def shutdown(self) -> None:
        self.child.stop()
