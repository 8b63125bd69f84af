"""The join client: how every node but the first becomes part of the cluster.

Join (first boot), in order:

1. Read the control-plane endpoints from the instance metadata (re-read on every attempt: in
   mini mode the CLI fills them in after the first node is up).
2. Open a *mutual* aTLS channel to the JoinService: the node attests with its vTPM, and it
   verifies the JoinService's evidence against the measurements it was given (the Go version
   did not authenticate the JoinService, DESIGN.md §9). No ticket request is sent to an
   unverified server.
3. Send ``IssueJoinTicket{disk_uuid, csr}`` with a CSR for a fresh ECDSA P-256 kubelet key.
4. Check the ticket (lengths, the kubelet certificate is for our key and our node name, the
   JoinService's verified PCR 15 is not the mark of another cluster), then fetch and verify
   the Kubernetes components it lists (nothing installed yet).
5. Derive the cluster ID from the ticket's measurement secret and salt and take the node lock.
   If the init server took it first, the join stops here: this node was initialized instead.
6. Rekey the state disk with the ticket's key, install the components, register the Node
   object with the kubelet certificate, persist the node state atomically. The lock, the rekey,
   the registration and the state are journaled before each runs (:mod:`.journal`); a join
   interrupted after its lock is recovered by a reboot (the node supervisor explains it).

Rejoin (the node state exists): ``IssueRejoinTicket{disk_uuid}``, check that the returned key
opens the state disk's header, check that the measurement secret reproduces the cluster ID on
record. If PCR 15 already carries the mark (the bootstrapper restarted, the vTPM did not) no
second lock is taken; after a real reboot (PCR 15 reset to zero) the mark is set again.

Every attempt (steps 1-3) is retried with exponential backoff and full jitter, bounded in count
and total time (:class:`~constellation.bootstrapper.config.RetryPolicy`); waiting is
interruptible, so the node supervisor can stop the client the moment the init server commits.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import grpc
import structlog
from cryptography import x509

from constellation.attestation.atls import AttestedChannel
from constellation.attestation.errors import ConstellationError
from constellation.attestation.evidence import VerifiedEvidence
from constellation.attestation.identity import Role
from constellation.attestation.kdf import derive_cluster_id
from constellation.attestation.measurements import Measurements, pcr15_for_cluster_id
from constellation.attestation.nodelock import PCR_NODE_LOCK
from constellation.bootstrapper.config import RetryPolicy
from constellation.bootstrapper.errors import BootstrapperError
from constellation.bootstrapper.initserver import NodeLatch
from constellation.bootstrapper.installer import ComponentInstaller
from constellation.bootstrapper.journal import (
    Journal,
    JournalPath,
    JournalRecord,
    Step,
    journal_for,
)
from constellation.bootstrapper.metadata import MetadataProvider
from constellation.bootstrapper.nodestate import NodeState, save_node_state
from constellation.bootstrapper.registration import (
    KubeletFiles,
    KubeletIdentity,
    create_kubelet_identity,
    register_node,
)
from constellation.bootstrapper.statedisk import DiskKey, StateDisk
from constellation.proto import join_pb2, join_pb2_grpc

_log = structlog.get_logger("constellation.bootstrapper.join")

KEY_LENGTH = 32
SALT_LENGTH = 32

T = TypeVar("T")


class JoinError(BootstrapperError):
    """Root of the join client's errors."""


class JoinTimeoutError(JoinError):
    """No JoinService answered within the retry bounds; the last failure is named."""


class JoinStoppedError(JoinError):
    """The client was stopped (the init server committed) before it obtained a ticket."""


class TicketError(JoinError):
    """The JoinService's answer is unusable (wrong lengths, a certificate for another key)."""


class RejoinError(JoinError):
    """A rejoin ticket does not fit this node (wrong disk key, different cluster)."""


class ChannelFactory(Protocol):
    """Opens a verified (mutual aTLS) channel to a JoinService at ``host:port``.

    ``cluster_id`` is the node's cluster on a rejoin: the JoinService's node must then carry
    exactly that cluster's node-lock mark (``joinservicetrust.JoinServiceValidator``).
    """

    def __call__(self, target: str, *, cluster_id: bytes | None = None) -> AttestedChannel: ...


class NodeRegistrar(Protocol):
    """Creates this node's Node object with its kubelet credentials."""

    def __call__(
        self, *, api_server_endpoint: str, files: KubeletFiles, node_name: str, node_ip: str
    ) -> None: ...


@dataclass(frozen=True)
class JoinOutcome:
    """What a successful join produced (public values only)."""

    cluster_id: bytes
    node_state: NodeState
    api_server_endpoint: str


class JoinClient:
    """Joins or rejoins the cluster; see the module docstring.

    ``took_lock`` tells the node supervisor whether THIS client passed its point of no return
    (the init server shares the same node lock).
    """

    def __init__(
        self,
        *,
        metadata: MetadataProvider,
        connect: ChannelFactory,
        node_lock: NodeLatch,
        state_disk: StateDisk,
        installer: ComponentInstaller,
        kubelet_files: KubeletFiles,
        node_state_path: Path,
        retry: RetryPolicy,
        stop: threading.Event | None = None,
        register: NodeRegistrar = register_node,
        rng: random.Random | None = None,
        journal: Journal | None = None,
    ) -> None:
        self._metadata = metadata
        self._connect = connect
        self._lock = node_lock
        self._disk = state_disk
        self._installer = installer
        self._kubelet_files = kubelet_files
        self._node_state_path = node_state_path
        self._retry = retry
        self._stop = stop or threading.Event()
        self._register = register
        self._rng = rng or random.SystemRandom()
        self.took_lock = False
        self._journal = journal or journal_for(node_state_path)

    # -- first join ------------------------------------------------------------------------

    def join(self, initial_disk_key: DiskKey) -> JoinOutcome | None:
        """Join the cluster; ``None`` if the init server took the node lock first."""
        node = self._metadata.self()
        identity = create_kubelet_identity(node.name, node.private_ip)
        disk_uuid = self._disk.uuid()
        request = join_pb2.IssueJoinTicketRequest(
            disk_uuid=disk_uuid,
            certificate_request=identity.csr_pem,
            is_control_plane=node.role == Role.CONTROL_PLANE,
        )
        try:
            ticket, server = self._with_retries(
                "IssueJoinTicket",
                lambda channel: (
                    join_pb2_grpc.APIStub(channel.channel).IssueJoinTicket(
                        request, timeout=self._retry.rpc_timeout_s
                    ),
                    channel.server,
                ),
                stop_when_locked=True,
            )
        except JoinStoppedError as exc:
            _log.info("join.stopped", reason=str(exc))
            return None
        check_join_ticket(ticket, identity)
        cluster_id = derive_cluster_id(ticket.measurement_secret, ticket.measurement_salt)
        check_joinservice_cluster(server, cluster_id)
        record = JournalRecord(Step.LOCK, disk_uuid, JournalPath.JOIN, cluster_id)
        with self._installer.stage(ticket.kubernetes_components) as staged:
            if self._stop.is_set() or not self._journal.take_lock(
                self._lock.try_lock,
                path=JournalPath.JOIN,
                disk_uuid=disk_uuid,
                cluster_id=cluster_id,
            ):
                _log.info("join.lost_race", reason="the node lock is taken (init committed)")
                return None
            self.took_lock = True
            _log.info("join.locked", cluster_id=cluster_id.hex(), node=node.name)
            self._journal.record(record.advance(Step.REKEY))
            self._disk.rekey(
                initial_disk_key,
                DiskKey(ticket.state_disk_key),
                on_step=self._journal.crash_point,
            )
            staged.install()
        self._journal.record(record.advance(Step.REGISTER))
        self._kubelet_files.write(identity, ticket.kubelet_cert, ticket.ca_cert)
        self._register(
            api_server_endpoint=ticket.api_server_endpoint,
            files=self._kubelet_files,
            node_name=node.name,
            node_ip=node.private_ip,
        )
        state = NodeState(
            cluster_id=cluster_id,
            measurement_salt=bytes(ticket.measurement_salt),
            role=node.role,
            disk_uuid=disk_uuid,
        )
        self._journal.crash_point("register")
        self._journal.record(record.advance(Step.STATE))
        save_node_state(self._node_state_path, state)
        self._journal.crash_point("state")
        self._journal.clear()
        _log.info("join.done", cluster_id=cluster_id.hex(), node=node.name)
        return JoinOutcome(cluster_id, state, ticket.api_server_endpoint)

    # -- rejoin after a restart ------------------------------------------------------------

    def rejoin(self, state: NodeState) -> DiskKey:
        """Obtain the disk key again and confirm it and the cluster ID; returns the key.

        Takes the node lock only if PCR 15 was reset (a real reboot); a restarted process on a
        still-marked vTPM does not extend PCR 15 a second time.
        """
        disk_uuid = self._disk.uuid()
        if disk_uuid != state.disk_uuid:
            raise RejoinError(
                f"the state disk's UUID {disk_uuid} differs from the recorded {state.disk_uuid}"
            )
        request = join_pb2.IssueRejoinTicketRequest(disk_uuid=disk_uuid)
        ticket = self._with_retries(
            "IssueRejoinTicket",
            lambda channel: join_pb2_grpc.APIStub(channel.channel).IssueRejoinTicket(
                request, timeout=self._retry.rpc_timeout_s
            ),
            cluster_id=state.cluster_id,
        )
        if len(ticket.state_disk_key) != KEY_LENGTH or len(ticket.measurement_secret) != KEY_LENGTH:
            raise TicketError("rejoin ticket: the disk key and measurement secret need 32 bytes")
        cluster_id = derive_cluster_id(ticket.measurement_secret, state.measurement_salt)
        if cluster_id != state.cluster_id:
            raise RejoinError(
                "the rejoin ticket's measurement secret does not reproduce this node's cluster "
                "ID; the JoinService belongs to another cluster"
            )
        key = DiskKey(ticket.state_disk_key)
        self._disk.check_key(key)
        if not self._lock.is_initialized():
            if not self._lock.try_lock(cluster_id):
                raise RejoinError("the node lock could not be re-marked after a reboot")
            _log.info("rejoin.relocked", cluster_id=cluster_id.hex())
        _log.info("rejoin.done", cluster_id=cluster_id.hex())
        return key

    # -- the bounded retry loop ------------------------------------------------------------

    def _with_retries(
        self,
        what: str,
        call: Callable[[AttestedChannel], T],
        *,
        stop_when_locked: bool = False,
        cluster_id: bytes | None = None,
    ) -> T:
        """Try every endpoint per attempt; back off between attempts; give up at the bounds.

        With ``stop_when_locked`` (first join) a node lock taken meanwhile (the init server
        committed) ends the loop at once: this node will never be allowed to join.
        """
        start = time.monotonic()
        last = "no attempt made"
        for attempt in range(self._retry.max_attempts):
            if self._stop.is_set():
                raise JoinStoppedError(f"{what}: stopped")
            if stop_when_locked and self._lock.is_initialized():
                raise JoinStoppedError(f"{what}: the node lock was taken by the init server")
            endpoints = [str(e) for e in self._metadata.control_plane_endpoints()]
            if not endpoints:
                last = "the instance metadata lists no control-plane endpoints yet"
            for target in endpoints:
                if self._stop.is_set():
                    raise JoinStoppedError(f"{what}: stopped")
                try:
                    with self._connect(target, cluster_id=cluster_id) as channel:
                        return call(channel)
                except grpc.RpcError as exc:
                    code = exc.code() if isinstance(exc, grpc.Call) else None
                    details = exc.details() if isinstance(exc, grpc.Call) else ""
                    last = f"{target}: {getattr(code, 'name', code)}: {details}"
                except ConstellationError as exc:
                    last = f"{target}: {type(exc).__name__}: {exc}"
                _log.warning("join.attempt_failed", what=what, attempt=attempt, error=last)
            remaining = self._retry.total_timeout_s - (time.monotonic() - start)
            if remaining <= 0 or attempt + 1 == self._retry.max_attempts:
                break
            delay = min(remaining, self._rng.uniform(0, self._retry.delay_cap(attempt)))
            if self._stop.wait(delay):
                raise JoinStoppedError(f"{what}: stopped")
        elapsed = time.monotonic() - start
        raise JoinTimeoutError(
            f"{what}: no JoinService answered after {attempt + 1} attempts in {elapsed:.1f}s; "
            f"last failure: {last}"
        )


def joinservice_measurements(image: Measurements) -> Measurements:
    """What a joining node expects of the JoinService's node: the image, PCR 15 unchecked.

    The JoinService runs on an initialized control-plane node, whose PCR 15 carries the mark of
    a cluster ID the joining node does not know yet; every other expected PCR is enforced.
    """
    return Measurements({i: m for i, m in image.items() if i != PCR_NODE_LOCK})


def check_joinservice_cluster(server: VerifiedEvidence, cluster_id: bytes) -> None:
    """The JoinService's node must carry the mark of the cluster its ticket names.

    Its PCR 15 (verified evidence, not a claim) must be exactly the mark of ``cluster_id``:
    a ticket from a service on an unmarked node, or on a node of another cluster, is refused
    before the node locks itself to that cluster. (``JoinServiceValidator`` already refused an
    unmarked node during the handshake; this check ties the mark to the ticket's secrets.)
    """
    marked = server.pcrs.get(PCR_NODE_LOCK)
    expected = pcr15_for_cluster_id(cluster_id)
    if marked == expected:
        return
    raise TicketError(
        "join ticket: the JoinService does not run on a node of the ticket's cluster "
        f"(PCR 15 {'missing' if marked is None else marked.hex()}, expected {expected.hex()})"
    )


def check_join_ticket(ticket: join_pb2.IssueJoinTicketResponse, identity: KubeletIdentity) -> None:
    """Refuse a ticket this node could not use (or that is not meant for it)."""
    for name in ("state_disk_key", "measurement_secret"):
        value: bytes = getattr(ticket, name)
        if len(value) != KEY_LENGTH:
            raise TicketError(f"join ticket: {name} must be {KEY_LENGTH} bytes, got {len(value)}")
    if len(ticket.measurement_salt) != SALT_LENGTH:
        raise TicketError(
            f"join ticket: measurement_salt must be {SALT_LENGTH} bytes, "
            f"got {len(ticket.measurement_salt)}"
        )
    if not ticket.api_server_endpoint:
        raise TicketError("join ticket: no API server endpoint")
    try:
        x509.load_pem_x509_certificate(ticket.ca_cert)
    except ValueError:
        raise TicketError("join ticket: the cluster CA certificate is not PEM") from None
    try:
        identity.check_certificate(ticket.kubelet_cert)
    except BootstrapperError as exc:
        raise TicketError(f"join ticket: {exc}") from None
