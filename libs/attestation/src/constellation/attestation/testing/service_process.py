"""Service commands as child processes in tests, with their JSON log lines.

Every service test runs the real command (``python -m constellation.<service> ...``) and
watches its structlog lines on stderr; this fixture starts them and always kills them by PID.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

START_TIMEOUT = 30.0


@dataclass
class ServiceProcess:
    """A service command running as a child process, with its stderr JSON log lines."""

    process: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    def wait_for_event(self, event: str, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == event:
                return dict(record)
        raise AssertionError(f"no {event!r} log line; stderr so far: {self.seen}")

    def drain(self) -> list[str]:
        while True:
            try:
                self.seen.append(self.lines.get_nowait())
            except queue.Empty:
                return self.seen


@pytest.fixture
def run_service() -> Iterator[Callable[..., ServiceProcess]]:
    """Starts ``python -m <module> <args>``; every child is killed (by PID) at teardown."""
    children: list[subprocess.Popen[str]] = []

    def start(module: str, *args: str) -> ServiceProcess:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        children.append(process)
        service = ServiceProcess(process)

        def pump() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                service.lines.put(line.rstrip("\n"))

        threading.Thread(target=pump, daemon=True).start()
        return service

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait(10)
