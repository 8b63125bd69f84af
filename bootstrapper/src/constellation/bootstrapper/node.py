"""The node supervisor: runs the init server and the join client side by side under the lock.

State machine of one bootstrapper run::

    node state on disk? ── yes ──► REJOIN: PCR 15 re-marked with the recorded cluster ID only
         │                          if a reboot reset it (never a second lock otherwise), then
         │                          rejoin ticket, disk key and cluster ID checked
         │                          │ the node runs the control plane (it initialized the
         │                          │ cluster) → start it again from its own files
         │                          │ rejoin attempts exhausted (no JoinService: full-cluster
         │                          ▼ shutdown) on such a node
         │                       RECOVER: serve recoverproto.API over aTLS (PCR 15 marked,
         │                          so the CLI sees the node is of its cluster) until
         │                          ``constellation recover`` sent the master secret
         │                          (:mod:`.recoveryserver`), which restarts the control plane
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
from typing import Protocol

import structlog

from constellation.attestation.errors import ConstellationError
from constellation.attestation.identity import Role
from constellation.bootstrapper.errors import BootstrapperError
from constellation.bootstrapper.initserver import (
    InitCallbacks,
    InitOutcome,
    InitServer,
    NodeLatch,
)
from constellation.bootstrapper.joinclient import (
    JoinClient,
    JoinOutcome,
    JoinStoppedError,
    JoinTimeoutError,
)
from constellation.bootstrapper.nodestate import NodeState, load_node_state
from constellation.bootstrapper.recoveryserver import RecoveryServer
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
    RECOVERED = "recovered"


@dataclass(frozen=True)
class NodeOutcome:
    """How this run ended (public values only)."""

    path: CommitPath
    cluster_id: bytes


class RestartableControlPlane(Protocol):
    """The control plane this node brought up at init, as a restarted node sees it."""

    def is_installed(self) -> bool:
        """True if this node initialized the cluster and keeps its control plane's files."""
        ...

    def restart(self) -> bytes:
        """Start it again from the installed binaries, PKI and etcd data."""
        ...


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
    collaborators. A node that initialized the cluster passes its ``control_plane`` (restarted
    on rejoin), ``make_rejoin_client`` (shorter retry bounds: on a full-cluster shutdown nobody
    answers) and ``serve_recovery`` (serves a :class:`RecoveryServer`, returns its stop).
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
        control_plane: RestartableControlPlane | None = None,
        make_rejoin_client: Callable[[threading.Event], JoinClient] | None = None,
        serve_recovery: Callable[[RecoveryServer], Callable[[float], None]] | None = None,
    ) -> None:
        self._lock = node_lock
        self._disk = state_disk
        self._node_state_path = node_state_path
        self._make_init_server = make_init_server
        self._serve_init = serve_init
        self._make_join_client = make_join_client
        self._stop_grace_s = stop_grace_s
        self._control_plane = control_plane
        self._make_rejoin_client = make_rejoin_client
        self._serve_recovery = serve_recovery
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

    def _runs_control_plane(self, state: NodeState) -> bool:
        return (
            state.role == Role.CONTROL_PLANE
            and self._control_plane is not None
            and self._control_plane.is_installed()
        )

    def _remark(self, state: NodeState) -> None:
        """Re-mark PCR 15 with the recorded cluster ID if a reboot reset it.

        Done before the node attests to anyone: the JoinService grants rejoin tickets only to
        nodes whose PCR 15 carries its cluster's mark, and the CLI sends the master secret for
        a recovery only to such a node. The mark claims nothing the node had not committed to
        (the node lock is a one-way latch to that cluster); the ticket or the recovery then
        proves it (the key must open the disk, the secret must reproduce this cluster ID).
        """
        if self._lock.is_initialized():
            return
        if not self._lock.try_lock(state.cluster_id):
            raise NodeError("the node lock could not be re-marked after a reboot")
        _log.info("node.relocked", cluster_id=state.cluster_id.hex())

    def _rejoin(self, state: NodeState) -> NodeOutcome | None:
        runs_control_plane = self._runs_control_plane(state)
        _log.info(
            "node.rejoin",
            cluster_id=state.cluster_id.hex(),
            control_plane=runs_control_plane,
        )
        self._remark(state)
        make_client = self._make_join_client
        if runs_control_plane and self._make_rejoin_client is not None:
            make_client = self._make_rejoin_client
        client = make_client(self.shutdown)
        try:
            client.rejoin(state)
        except JoinStoppedError:
            return None
        except JoinTimeoutError as exc:
            if not runs_control_plane or self._serve_recovery is None:
                raise
            _log.warning("node.rejoin_failed", error=str(exc), next="recovery")
            return self._recover(state)
        if runs_control_plane:
            assert self._control_plane is not None
            self._control_plane.restart()
        return NodeOutcome(CommitPath.REJOINED, state.cluster_id)

    def _recover(self, state: NodeState) -> NodeOutcome | None:
        """Wait (until shutdown) for the admin's ``constellation recover``.

        PCR 15 carries the mark already (:meth:`_rejoin`), so the CLI can refuse a node that is
        not of its cluster before it sends the master secret; ``Recover`` then proves the
        mark's claim: the secret must open the disk and reproduce that very cluster ID.
        """
        assert self._serve_recovery is not None
        assert self._control_plane is not None
        control_plane = self._control_plane

        def restart_control_plane(_key: DiskKey) -> None:
            control_plane.restart()

        server = RecoveryServer(
            node_state=state,
            state_disk=self._disk,
            node_lock=self._lock,
            on_recovered=restart_control_plane,
        )
        stop = self._serve_recovery(server)
        try:
            while not server.recovered.wait(0.2):
                if self.shutdown.is_set():
                    return None
        finally:
            # Let the answer to the successful Recover reach the CLI, then stop serving.
            stop(self._stop_grace_s)
        _log.info("node.recovered", cluster_id=state.cluster_id.hex())
        return NodeOutcome(CommitPath.RECOVERED, state.cluster_id)

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
