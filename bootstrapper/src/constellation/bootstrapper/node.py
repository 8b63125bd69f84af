"""The node supervisor: runs the init server and the join client side by side under the lock.

State machine of one bootstrapper run::

    node state on disk? ── yes ──► REJOIN: rejoin ticket, disk key checked, PCR 15 re-marked
         │                          only if a reboot reset it (never a second lock otherwise)
         no
         │ (the node lock must be free too; a taken lock without node state is an
         │  inconsistent node and is refused)
         ▼
    format the state disk (LUKS2, random initial passphrase kept in memory only)
         ▼
    RACE: init server (serves init.API over aTLS) ║ join client (bounded retries)
         │  whichever takes the node lock first commits; the node lock is a one-way latch
         │  (PCR 15), so the other path's ``try_lock`` fails and it stops:
         │  - init committed  → the join client is stopped (interruptible wait)
         │  - join committed  → the init server is stopped; a late Init gets
         │                      FAILED_PRECONDITION from the lock check
         ▼
    INITIALIZED / JOINED: the outcome is returned; the caller keeps the process (and, on the
    first node, the control-plane children) alive until SIGTERM.

A join client that exhausts its retry bounds does not end the race: the init server keeps
serving (the first node's join client always fails — nobody can answer it before init), and
the failure is logged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import structlog

from constellation.attestation.errors import ConstellationError
from constellation.bootstrapper.errors import BootstrapperError
from constellation.bootstrapper.initserver import (
    InitCallbacks,
    InitOutcome,
    InitServer,
    NodeLatch,
)
from constellation.bootstrapper.joinclient import JoinClient, JoinOutcome
from constellation.bootstrapper.nodestate import NodeState, load_node_state
from constellation.bootstrapper.statedisk import DiskKey, StateDisk

_log = structlog.get_logger("constellation.bootstrapper.node")

DEFAULT_STOP_GRACE_S = 5.0


class NodeError(BootstrapperError):
    """The node is in a state the bootstrapper cannot continue from."""


class CommitPath(StrEnum):
    """Which path committed the node."""

    INITIALIZED = "initialized"
    JOINED = "joined"
    REJOINED = "rejoined"


@dataclass(frozen=True)
class NodeOutcome:
    """How this run ended (public values only)."""

    path: CommitPath
    cluster_id: bytes


@dataclass
class _Race:
    """Shared state of the race; ``committed`` is set once, by the winner."""

    committed: threading.Event
    outcome: NodeOutcome | None = None
    error: str | None = None


class Node:
    """Wires the init server and the join client of one node; see the module docstring.

    ``serve_init(servicer)`` starts the (aTLS) gRPC server for the init servicer and returns a
    function that stops it; ``make_init_server(initial_key, on_initialized)`` and
    ``make_join_client(stop)`` build the two paths, so tests and ``__main__`` pass real
    collaborators.
    """

    def __init__(
        self,
        *,
        node_lock: NodeLatch,
        state_disk: StateDisk,
        node_state_path: Path,
        make_init_server: Callable[[DiskKey, InitCallbacks], InitServer],
        serve_init: Callable[[InitServer], Callable[[float], None]],
        make_join_client: Callable[[threading.Event], JoinClient],
        stop_grace_s: float = DEFAULT_STOP_GRACE_S,
    ) -> None:
        self._lock = node_lock
        self._disk = state_disk
        self._node_state_path = node_state_path
        self._make_init_server = make_init_server
        self._serve_init = serve_init
        self._make_join_client = make_join_client
        self._stop_grace_s = stop_grace_s
        self.shutdown = threading.Event()

    def run(self) -> NodeOutcome | None:
        """Run until one path committed (returns its outcome) or ``shutdown`` is set (None)."""
        if self._node_state_path.exists():
            return self._rejoin(load_node_state(self._node_state_path))
        if self._lock.is_initialized():
            raise NodeError(
                "the node lock is taken but no node state was persisted: the node crashed "
                "between its point of no return and the end of init/join; recreate the node"
            )
        initial_key = self._prepare_disk()
        return self._race(initial_key)

    def _rejoin(self, state: NodeState) -> NodeOutcome:
        _log.info("node.rejoin", cluster_id=state.cluster_id.hex())
        client = self._make_join_client(self.shutdown)
        client.rejoin(state)
        return NodeOutcome(CommitPath.REJOINED, state.cluster_id)

    def _prepare_disk(self) -> DiskKey:
        if self._disk.is_luks():
            raise NodeError(
                f"the state disk {self._disk.device} already carries a LUKS header but the "
                "node has no state: its initial passphrase is lost; wipe the disk and restart"
            )
        return self._disk.format()

    def _race(self, initial_key: DiskKey) -> NodeOutcome | None:
        race = _Race(committed=threading.Event())
        stop_join = threading.Event()

        def on_initialized(outcome: InitOutcome) -> None:
            race.outcome = NodeOutcome(CommitPath.INITIALIZED, outcome.cluster_id)
            stop_join.set()
            race.committed.set()

        def on_init_failed(reason: str) -> None:
            race.error = f"init failed after the node lock was taken: {reason}"
            stop_join.set()
            race.committed.set()

        callbacks = InitCallbacks(on_initialized=on_initialized, on_failed=on_init_failed)
        servicer = self._make_init_server(initial_key, callbacks)
        stop_init = self._serve_init(servicer)
        client = self._make_join_client(stop_join)

        def join() -> None:
            try:
                result: JoinOutcome | None = client.join(initial_key)
            except Exception as exc:
                reason = str(exc) if isinstance(exc, ConstellationError) else "internal error"
                if client.took_lock:
                    # Past the join's own point of no return: the node cannot recover by itself.
                    race.error = f"join failed after the node lock was taken: {reason}"
                    race.committed.set()
                if isinstance(exc, ConstellationError):
                    _log.error("node.join_failed", error=reason)
                else:
                    _log.exception("node.join_failed")
                return
            if result is not None:
                race.outcome = NodeOutcome(CommitPath.JOINED, result.cluster_id)
                race.committed.set()

        joiner = threading.Thread(target=join, name="join-client", daemon=True)
        joiner.start()
        try:
            while not race.committed.wait(0.2):
                if self.shutdown.is_set():
                    return None
        finally:
            stop_join.set()
            # Let a finishing Init deliver its last message, then refuse everything else.
            stop_init(self._stop_grace_s)
            joiner.join(timeout=self._stop_grace_s)
        if race.outcome is None:
            raise NodeError(race.error or "the node committed without an outcome")
        _log.info("node.committed", path=str(race.outcome.path))
        return race.outcome
