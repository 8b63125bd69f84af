"""Process life cycle of a service: run until SIGTERM/SIGINT, then drain and exit.

Shutdown order: health goes NOT_SERVING (new traffic is steered away), the gRPC servers stop
accepting and get ``grace`` seconds to finish in-flight calls, then the remaining closers
(HTTP and metrics endpoints) run. Every step is bounded in time.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType

import grpc
import structlog

from constellation.attestation.service.health import Health

_log = structlog.get_logger("constellation.service")


class Shutdown:
    """A one-way latch that a signal (or a test) sets to begin shutdown."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def request(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM (Kubernetes, systemd) and SIGINT (Ctrl-C) request shutdown."""

        def handle(signum: int, _frame: FrameType | None) -> None:
            self.request(signal.Signals(signum).name)

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)


def run_until_shutdown(
    shutdown: Shutdown,
    *,
    servers: Sequence[grpc.Server],
    health: Health | None = None,
    closers: Sequence[Callable[[], None]] = (),
    grace: float = 10.0,
) -> int:
    """Block until ``shutdown`` is requested, then stop everything; returns the exit code 0."""
    while not shutdown.wait(1.0):
        pass
    _log.info("service.stopping", reason=shutdown.reason, grace_seconds=grace)
    if health is not None:
        health.not_serving()
    stopped = [server.stop(grace) for server in servers]
    for event in stopped:
        event.wait(grace + 1.0)
    for close in closers:
        close()
    _log.info("service.stopped")
    return 0
