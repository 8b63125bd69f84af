"""The loop every supervisor shares: signals, backoff, counting, giving up (package docstring).

Subclasses (:mod:`.unit`, :mod:`.node`) say what to start and what a death means;
:meth:`Supervisor.backoff` decides when the next start is and when a failing child is given
up (:class:`GiveUpError`), and :meth:`Supervisor.run` turns that into the exit status.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import structlog

from constellation.cli.mini.supervision.child import Child
from constellation.cli.mini.supervision.policy import RestartPolicy
from constellation.cli.mini.supervision.status import UnitStatus

POLL_S = 0.1

_log = structlog.get_logger()


class GiveUpError(Exception):
    """A child failed too often in a row; the supervisor stops (internal to this package)."""


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
