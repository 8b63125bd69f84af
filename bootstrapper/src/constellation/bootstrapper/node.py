"""The node supervisor: runs the init server and the join client side by side under the lock.

State machine of one bootstrapper run::

    node state on disk? ── yes ──► (journal: Init died before answering → RESUME, below)
         │                         SAME BOOT? the disk-open record (:mod:`.bootid`) names the
         │                          current boot AND PCR 15 carries the cluster's mark → log
         │                          ``node.same_boot_restart``; a control-plane node starts
         │                          its control plane again from its own files (stale children
         │                          of the dead run are ended first); nothing is asked of anyone
         │                          otherwise ▼
         │                         REJOIN: PCR 15 re-marked with the recorded cluster ID only
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
         │ an unfinished init/join in the journal (:mod:`.journal`)?
         │  - PCR 15 marked for its cluster by an interrupted Init → RESUME: serve Init only
         │    for that cluster (the CLI repeats ``apply``), completing the remaining steps
         │  - PCR 15 marked by an interrupted join, or by nobody journaled → stop, telling
         │    the admin to reboot the node (a reboot resets PCR 15): ``RebootRequiredError``,
         │    exit code ``EXIT_REBOOT_REQUIRED`` (:mod:`.exitcodes`), on which mini mode's
         │    node supervisor reboots the node
         │  - PCR 15 zero → the disk never held cluster data: re-format it (same UUID), log
         │    ``node.disk_reinitialized``, and go on as on a first boot
         ▼
    format the state disk (LUKS2, UUID journaled first, random initial passphrase kept in
    memory only)
         ▼
    RACE: init server (serves init.API over aTLS) ║ join client (bounded retries)
         │  whichever takes the node lock first commits; the node lock is a one-way latch
         │  (PCR 15), so the other path's ``try_lock`` fails and it stops:
         │  - init committed  → the join client is stopped (interruptible wait)
         │  - join committed  → the init server is stopped; a late Init gets
         │                      FAILED_PRECONDITION from the lock check
         ▼
    INITIALIZED / JOINED / REJOINED / RECOVERED: the boot ID is recorded (``disk-open.json``)
    and the outcome is returned; the caller keeps the process (and, on the first node, the
    control-plane children) alive until SIGTERM. A same-boot restart returns RESTARTED.

Why a same-boot restart needs nobody. The bootstrapper is one process; its supervisor restarts
it when it dies, on the same boot: the PCRs stay, PCR 15 keeps the node lock, and on a real
node the state disk stays mapped (dm-crypt holds the key in the kernel until the machine
reboots). Such a node needs no key and no ticket, only its services back. Asking the JoinService
would even fail on the first control plane: it initialized the cluster and never joined, so
the JoinService holds no disk binding for it (``disk.unknown``), and the node would fall into
RECOVER while the dead run's etcd and API server still ran unadopted. A reboot loses the
mapping (and resets PCR 15) and takes REJOIN/RECOVER as before.

What proves "same boot", and why both halves are demanded:

- the boot ID (``/proc/sys/kernel/random/boot_id``, config ``boot_id_path``) recorded when a
  run of this node committed equals the current one: a reboot draws a new one. It is a file,
  so on its own it proves nothing against someone who can write the node's state directory;
- PCR 15 carries *this* cluster's mark: the node lock is a one-way latch that only a reboot
  (or a TPM reset) clears, so a marked PCR 15 shows the TPM has not been reset since a run
  committed to this cluster. A reset TPM (PCR 15 zero) or another cluster's mark means REJOIN.

A same-boot restart obtains nothing and reveals nothing: it only restarts, from the node's own
files, what this node ran before (the control plane checks its binaries against the hashes
recorded at init before running them). A missing or damaged record, an unreadable boot ID or
PCR 15 never mean "same boot"; they cost a rejoin (logged ``node.same_boot_unknown``), never a
wrong restart. A worker restarted on the same boot returns at once: its rejoin would only fetch
the disk key again, and the disk is open already; it runs no children to adopt.

A join client that exhausts its retry bounds does not end the race: the init server keeps
serving (the first node's join client always fails — nobody can answer it before init), and
the failure is logged.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import structlog

from constellation.attestation.errors import ConstellationError
from constellation.attestation.identity import Role
from constellation.attestation.measurements import pcr15_for_cluster_id
from constellation.attestation.nodelock import PCR_NODE_LOCK
from constellation.attestation.vtpm import open_tpm, read_pcrs
from constellation.bootstrapper.bootid import (
    DISK_OPEN_FILE,
    DiskOpenRecord,
    load_disk_open,
    save_disk_open,
)
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
from constellation.bootstrapper.journal import (
    Journal,
    JournalPath,
    JournalRecord,
    Step,
    journal_for,
)
from constellation.bootstrapper.nodestate import NodeState, load_node_state
from constellation.bootstrapper.recoveryserver import RecoveryServer
from constellation.bootstrapper.statedisk import DiskKey, StateDisk

_log = structlog.get_logger("constellation.bootstrapper.node")

DEFAULT_STOP_GRACE_S = 5.0


class NodeError(BootstrapperError):
    """The node is in a state the bootstrapper cannot continue from."""


class RebootRequiredError(NodeError):
    """Only a reboot (which resets PCR 15) lets this node go on; restarting it would not.

    The process exits with :data:`.exitcodes.EXIT_REBOOT_REQUIRED` so that its supervisor
    reboots the node instead of restarting the bootstrapper on the same boot.
    """


class CommitPath(StrEnum):
    """Which path committed the node."""

    INITIALIZED = "initialized"
    JOINED = "joined"
    REJOINED = "rejoined"
    RECOVERED = "recovered"
    # Not a commit of this run: a run of this boot committed, this one brought it back.
    RESTARTED = "restarted"


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

    def forget(self) -> None:
        """Drop the record of a control plane an interrupted init left (it never committed)."""
        ...


@dataclass
class _Race:
    """Shared state of the race; ``committed`` is set once, by the winner."""

    committed: threading.Event
    outcome: NodeOutcome | None = None
    error: str | None = None
    reboot_required: bool = False


class Node:
    """Wires the init server and the join client of one node; see the module docstring.

    ``serve_init(servicer)`` starts the (aTLS) gRPC server for the init servicer and returns a
    function that stops it; ``make_init_server(initial_key, on_initialized)`` (``initial_key``
    is ``None`` when an interrupted Init is resumed: the server then reads the journal) and
    ``make_join_client(stop)`` build the two paths, so tests and ``__main__`` pass real
    collaborators. A node that initialized the cluster passes its ``control_plane`` (restarted
    on rejoin), ``make_rejoin_client`` (shorter retry bounds: on a full-cluster shutdown nobody
    answers) and ``serve_recovery`` (serves a :class:`RecoveryServer`, returns its stop).
    ``boot_id`` reads the current boot's ID and ``read_pcr15`` the node lock's PCR; without
    both, no restart is ever taken for a same-boot one (the rejoin path runs).
    """

    def __init__(
        self,
        *,
        node_lock: NodeLatch,
        state_disk: StateDisk,
        node_state_path: Path,
        make_init_server: Callable[[DiskKey | None, InitCallbacks], InitServer],
        serve_init: Callable[[InitServer], Callable[[float], None]],
        make_join_client: Callable[[threading.Event], JoinClient],
        stop_grace_s: float = DEFAULT_STOP_GRACE_S,
        control_plane: RestartableControlPlane | None = None,
        make_rejoin_client: Callable[[threading.Event], JoinClient] | None = None,
        serve_recovery: Callable[[RecoveryServer], Callable[[float], None]] | None = None,
        journal: Journal | None = None,
        read_pcr15: Callable[[], bytes] | None = None,
        boot_id: Callable[[], str] | None = None,
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
        self._journal = journal or journal_for(node_state_path)
        self._read_pcr15 = read_pcr15
        self._boot_id = boot_id
        self._disk_open_path = node_state_path.parent / DISK_OPEN_FILE
        self.shutdown = threading.Event()

    def run(self) -> NodeOutcome | None:
        """Run until one path committed (returns its outcome) or ``shutdown`` is set (None)."""
        outcome = self._run()
        if outcome is not None and outcome.path is not CommitPath.RESTARTED:
            self._record_disk_open(outcome.cluster_id)
        return outcome

    def _run(self) -> NodeOutcome | None:
        if self._node_state_path.exists():
            state = load_node_state(self._node_state_path)
            pending = self._journal.read()
            if (
                pending is not None
                and pending.path is JournalPath.INIT
                and pending.step is Step.STATE
                and pending.cluster_id == state.cluster_id
            ):
                # The init wrote its state but died before its answer reached the CLI, which
                # has no kubeconfig yet: serve that Init again (it completes idempotently).
                self._remark(state)
                return self._resume(pending)
            self._journal.clear()
            if self._same_boot(state):
                return self._restart_same_boot(state)
            return self._rejoin(state)
        record = self._journal.read()
        if self._lock.is_initialized():
            return self._resume(record)
        initial_key = self._prepare_disk(record)
        return self._race(initial_key)

    def _record_disk_open(self, cluster_id: bytes) -> None:
        """Remember that this boot's run committed (the disk is open for ``cluster_id``).

        A failure only costs a later same-boot restart its shortcut (it rejoins instead), so
        it is logged, not raised: the node has committed and serves.
        """
        if self._boot_id is None:
            return
        try:
            save_disk_open(self._disk_open_path, DiskOpenRecord(self._boot_id(), cluster_id))
        except ConstellationError as exc:
            _log.warning(
                "node.boot_unrecorded",
                error=str(exc),
                consequence="a restart on this boot rejoins instead of restarting directly",
            )

    def _same_boot(self, state: NodeState) -> bool:
        """True only if a run of this boot committed to this cluster and PCR 15 still says so.

        Both the recorded boot ID and PCR 15's mark must hold (module docstring); anything
        unreadable means "not known to be the same boot", i.e. the rejoin path.
        """
        if self._boot_id is None or self._read_pcr15 is None:
            return False
        try:
            record = load_disk_open(self._disk_open_path)
            if record is None:
                return False
            current = self._boot_id()
            marked = self._read_pcr15()
        except ConstellationError as exc:
            _log.warning("node.same_boot_unknown", error=str(exc), next="rejoin")
            return False
        if record.boot_id != current:
            _log.info("node.rebooted", recorded_boot=record.boot_id, boot=current, next="rejoin")
            return False
        if record.cluster_id != state.cluster_id:
            _log.warning(
                "node.same_boot_unknown",
                error=f"the disk-open record names cluster {record.cluster_id.hex()}, the node "
                f"state {state.cluster_id.hex()}",
                next="rejoin",
            )
            return False
        if marked != pcr15_for_cluster_id(state.cluster_id):
            _log.warning(
                "node.same_boot_unmarked",
                reason="PCR 15 does not carry this cluster's mark (the TPM was reset or "
                "extended by someone else), so this is not the boot that committed",
                next="rejoin",
            )
            return False
        return True

    def _restart_same_boot(self, state: NodeState) -> NodeOutcome:
        """Bring back what the dead run of this boot ran; ask nobody for anything."""
        runs_control_plane = self._runs_control_plane(state)
        _log.info(
            "node.same_boot_restart",
            cluster_id=state.cluster_id.hex(),
            control_plane=runs_control_plane,
            fetched="nothing: the state disk is still open on this boot",
        )
        if runs_control_plane:
            assert self._control_plane is not None
            self._control_plane.restart()
        return NodeOutcome(CommitPath.RESTARTED, state.cluster_id)

    def _resume(self, record: JournalRecord | None) -> NodeOutcome | None:
        """PCR 15 is marked and there is no node state: the bootstrapper died mid-commit."""
        reboot = (
            "reboot the node (that resets PCR 15); the bootstrapper then re-initializes its "
            "state disk by itself, which never held cluster data, and serves Init or joins again"
        )
        if record is None or record.cluster_id is None or record.path is None:
            raise RebootRequiredError(
                "the node lock (PCR 15) is taken but this node journaled no init or join and "
                f"has no node state, so another process took it; {reboot}"
            )
        marked = self._pcr15()
        if marked is not None and marked != pcr15_for_cluster_id(record.cluster_id):
            raise RebootRequiredError(
                "PCR 15 does not carry the mark of the cluster this node journaled "
                f"({record.cluster_id.hex()}); another process extended it; {reboot}"
            )
        if record.path is JournalPath.JOIN:
            raise RebootRequiredError(
                f"a join into cluster {record.cluster_id.hex()} was interrupted at step "
                f"'{record.step.value}' after the node lock was taken; the JoinService gives a "
                f"locked node no second join ticket, so {reboot}"
            )
        _log.warning(
            "node.init_resumable",
            cluster_id=record.cluster_id.hex(),
            interrupted_step=record.step.value,
            next="serving Init for this cluster only; run `constellation apply` again",
        )
        return self._race(None)

    def _pcr15(self) -> bytes | None:
        """PCR 15's value if the wiring can read it (``read_pcr15``), else ``None``."""
        return None if self._read_pcr15 is None else self._read_pcr15()

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

    def _prepare_disk(self, record: JournalRecord | None) -> DiskKey:
        """Format the state disk; re-format it if the journal proves it never held data.

        No node state and PCR 15 zero: whatever the journal says was interrupted, the node
        never committed in this boot and never wrote its state, so the disk holds nothing of a
        cluster. A LUKS disk without a journal record (or with another UUID) was not formatted
        by this node and is refused.
        """
        is_luks = self._disk.is_luks()
        if record is not None:
            if is_luks and self._disk.uuid() != record.disk_uuid:
                raise NodeError(
                    f"the state disk {self._disk.device} has the LUKS UUID {self._disk.uuid()}, "
                    f"but this node formatted {record.disk_uuid}: it is not this node's disk; "
                    "attach the node's own disk, or a blank one"
                )
            _log.warning(
                "node.disk_reinitialized",
                disk_uuid=record.disk_uuid,
                interrupted_step=record.step.value,
                interrupted_path=None if record.path is None else record.path.value,
                reason="an init or join was interrupted before the node state was written; "
                "the disk never held cluster data",
            )
            if record.path is not None and self._control_plane is not None:
                self._control_plane.forget()
            disk_uuid = record.disk_uuid
        elif is_luks:
            raise NodeError(
                f"the state disk {self._disk.device} carries a LUKS header this node did not "
                "format (no node state, no journal): it may hold another node's data; attach "
                "a blank disk or this node's own, or wipe this one if its data is not needed"
            )
        else:
            disk_uuid = str(uuid.uuid4())
        self._journal.record(JournalRecord(Step.FORMAT, disk_uuid))
        key = self._disk.format(uuid=disk_uuid, replace=record is not None)
        self._journal.crash_point("format")
        return key

    def _race(self, initial_key: DiskKey | None) -> NodeOutcome | None:
        """Serve Init and run the join client; ``initial_key=None`` resumes an interrupted
        Init (the node lock is already taken for its cluster: no join client runs)."""
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
            if initial_key is None:
                return
            try:
                result: JoinOutcome | None = client.join(initial_key)
            except Exception as exc:
                reason = str(exc) if isinstance(exc, ConstellationError) else "internal error"
                if client.took_lock:
                    # Past the join's own point of no return: the node cannot recover by itself.
                    race.error = (
                        f"join failed after the node lock was taken: {reason}; the JoinService "
                        "gives a locked node no second join ticket, so reboot the node (that "
                        "resets PCR 15) and it joins again"
                    )
                    race.reboot_required = True
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
            if race.reboot_required:
                raise RebootRequiredError(race.error or "the join failed after its node lock")
            raise NodeError(race.error or "the node committed without an outcome")
        _log.info("node.committed", path=str(race.outcome.path))
        return race.outcome


def pcr15_reader(tcti: str) -> Callable[[], bytes]:
    """Read PCR 15 of the TPM at ``tcti`` (to check a mark against the journal)."""

    def read() -> bytes:
        with open_tpm(tcti) as esapi:
            _, values = read_pcrs(esapi, (PCR_NODE_LOCK,))
        return values[PCR_NODE_LOCK]

    return read
