"""One child process of a supervisor: started, polled (and so reaped), stopped in bounds."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

STOP_GRACE_S = 20.0
KILL_WAIT_S = 5.0


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

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

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
