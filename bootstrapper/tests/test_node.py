"""The node supervisor and the init/join race under the node lock (real swtpm, cryptsetup).

The race runs the real init server (over aTLS) and the real join client (over mutual aTLS to
a ``TicketAuthority``) against ONE node: one vTPM, one state disk. Whatever the timing, exactly
one path takes the node lock, and only that path rekeys the disk.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest

from constellation.attestation import atls
from constellation.attestation.identity import Role
from constellation.attestation.kdf import derive_cluster_id, derive_key, derive_measurement_secret
from constellation.attestation.measurements import Measurement, Measurements, pcr15_for_cluster_id
from constellation.attestation.swtpm import Swtpm
from constellation.attestation.testing.platform import node_validator
from constellation.attestation.vtpm import open_tpm, read_pcrs
from constellation.bootstrapper.__main__ import exit_code_for
from constellation.bootstrapper.config import RetryPolicy
from constellation.bootstrapper.exitcodes import EXIT_REBOOT_REQUIRED
from constellation.bootstrapper.initserver import InitCallbacks, InitServer, LocalControlPlane
from constellation.bootstrapper.joinclient import JoinClient
from constellation.bootstrapper.journal import JournalPath, JournalRecord, Step, journal_for
from constellation.bootstrapper.node import CommitPath, Node, NodeError, RebootRequiredError
from constellation.bootstrapper.nodestate import NodeState, save_node_state
from constellation.bootstrapper.registration import KubeletFiles, RegistrationError
from constellation.bootstrapper.statedisk import DiskKey
from constellation.bootstrapper.testing import (
    ZERO_PCR,
    ClusterCA,
    ClusterSecrets,
    NodeParts,
    TicketAuthority,
    component_for,
    init_request,
    join_channel_factory,
    make_node,
    measure_image,
    serve_init,
    serve_join,
    uninitialized_node_validator,
)
from constellation.proto import init_pb2_grpc

pytestmark = pytest.mark.swtpm

RETRY = RetryPolicy(
    initial_delay_s=0.05, max_delay_s=0.2, max_attempts=5, total_timeout_s=30, rpc_timeout_s=15
)


def _pcr15(tcti: str) -> bytes:
    with open_tpm(tcti) as esapi:
        _, values = read_pcrs(esapi, (15,))
    return values[15]


class Cluster:
    """A JoinService node serving tickets, and a fresh node that may init or join.

    The JoinService runs on an initialized control-plane node of the authority's cluster (its
    PCR 15 carries that cluster's mark), as a joining node demands.
    """

    def __init__(
        self, stack: ExitStack, tmp_path: Path, tpms: list[Swtpm], *, rejoin: bool
    ) -> None:
        joinservice_tpm, node_tpm = tpms
        log, self.joinservice_measurements = measure_image(joinservice_tpm, b"cp image")
        self.authority = TicketAuthority(ClusterSecrets(), ClusterCA.generate(), "127.0.0.1:1")
        expectation = Measurements({15: Measurement(ZERO_PCR, warn_only=rejoin)})
        endpoint = stack.enter_context(
            serve_join(
                self.authority,
                joinservice_tpm,
                log,
                node_validator(expectation),
                marked_for=self.authority.cluster.cluster_id,
            )
        )
        self.node = make_node(tmp_path / "node", node_tpm, endpoints=(endpoint,))

    def join_client(self, stop: threading.Event) -> JoinClient:
        return JoinClient(
            metadata=self.node.metadata,
            connect=join_channel_factory(self.node, self.joinservice_measurements),
            node_lock=self.node.lock,
            state_disk=self.node.disk,
            installer=self.node.installer,
            kubelet_files=KubeletFiles(self.node.directory / "state" / "kubelet"),
            node_state_path=self.node.node_state_path,
            retry=RETRY,
            stop=stop,
        )


@pytest.fixture
def make_cluster(
    tmp_path: Path, swtpm_factory: Callable[[int], list[Swtpm]]
) -> Iterator[Callable[..., Cluster]]:
    with ExitStack() as stack:
        yield lambda rejoin=False: Cluster(stack, tmp_path, swtpm_factory(2), rejoin=rejoin)


@pytest.fixture
def tool(tmp_path: Path) -> Path:
    path = tmp_path / "kubeadm"
    path.write_bytes(b"#!/bin/sh\nexit 0\n")
    return path


def _wait_until_locked(node: NodeParts) -> None:
    deadline = time.monotonic() + 60
    while not node.lock.is_initialized():
        assert time.monotonic() < deadline, "the other path never took the lock"
        time.sleep(0.05)


@pytest.mark.parametrize("order", ["together", "init-first", "join-first"])
def test_init_and_join_race_exactly_one_commits(
    make_cluster: Callable[..., Cluster], tool: Path, tmp_path: Path, order: str
) -> None:
    cluster = make_cluster()
    node = cluster.node
    request = init_request([component_for("kubeadm", tool, "/usr/bin/kubeadm")])
    init_secret = derive_measurement_secret(request.master_secret, request.master_salt)
    init_cluster_id = derive_cluster_id(init_secret, request.measurement_salt)
    join_cluster_id = cluster.authority.cluster.cluster_id
    assert init_cluster_id != join_cluster_id

    stop_join = threading.Event()
    results: dict[str, object] = {}
    # The init path fails after its lock (no control-plane binaries in the request): the race
    # is decided at the lock, which is what this test checks.
    plane = LocalControlPlane(tmp_path / "cp")
    start = threading.Barrier(2)

    def run_init(target: str) -> None:
        # Like the CLI: attest the (still unlocked) node first, then send Init.
        with atls.connect(target, [uninitialized_node_validator()], timeout=30) as channel:
            stub = init_pb2_grpc.APIStub(channel.channel)
            start.wait()
            if order == "join-first":
                _wait_until_locked(node)
            try:
                results["init"] = list(stub.Init(request, timeout=120))
            except grpc.RpcError as exc:
                results["init"] = exc

    def run_join() -> None:
        start.wait()
        if order == "init-first":
            _wait_until_locked(node)
        try:
            results["join"] = cluster.join_client(stop_join).join(node.initial_key)
        except RegistrationError as exc:  # past the lock: no API server in this test
            results["join"] = exc

    callbacks = InitCallbacks(
        on_initialized=lambda _: stop_join.set(), on_failed=lambda _: stop_join.set()
    )
    with serve_init(node, plane, callbacks) as target:
        threads = [
            threading.Thread(target=run_init, args=(target,)),
            threading.Thread(target=run_join),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads)

    pcr15 = _pcr15(node.tpm.tcti)
    init_won = pcr15 == pcr15_for_cluster_id(init_cluster_id)
    join_won = pcr15 == pcr15_for_cluster_id(join_cluster_id)
    assert init_won != join_won, "exactly one path must have taken the node lock"
    uuid = node.disk.uuid()
    init_key = DiskKey(derive_key(request.master_secret, request.master_salt, "key-" + uuid, 32))
    join_key = DiskKey(cluster.authority.cluster.disk_key(uuid))
    if init_won:
        phases = [r.progress.phase for r in results["init"]]  # type: ignore[union-attr]
        assert "node-lock" in phases
        assert results["init"][-1].WhichOneof("kind") == "init_failure"  # type: ignore[index]
        assert results["join"] is None
        assert node.disk.key_matches(init_key)
        assert not node.disk.key_matches(join_key)
    else:
        assert isinstance(results["join"], RegistrationError)
        error = results["init"]
        assert isinstance(error, grpc.RpcError)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert node.disk.key_matches(join_key)
        assert not node.disk.key_matches(init_key)
    if order != "together":
        assert join_won == (order == "join-first")


def _node(cluster: Cluster, served: list[InitServer]) -> Node:
    def serve_init_recorded(servicer: InitServer) -> Callable[[float], None]:
        served.append(servicer)
        return lambda grace: None

    def make_init_server(key: DiskKey, callbacks: InitCallbacks) -> InitServer:
        raise AssertionError("a node with state must not serve Init")

    return Node(
        node_lock=cluster.node.lock,
        state_disk=cluster.node.disk,
        node_state_path=cluster.node.node_state_path,
        make_init_server=make_init_server,
        serve_init=serve_init_recorded,
        make_join_client=cluster.join_client,
    )


def test_restarted_node_rejoins_without_a_second_lock(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(rejoin=True)
    node = cluster.node
    secrets = cluster.authority.cluster
    uuid = node.disk.uuid()
    node.disk.rekey(node.initial_key, DiskKey(secrets.disk_key(uuid)))
    assert node.lock.try_lock(secrets.cluster_id)
    save_node_state(
        node.node_state_path,
        NodeState(secrets.cluster_id, secrets.measurement_salt, Role.CONTROL_PLANE, uuid),
    )
    marked = _pcr15(node.tpm.tcti)
    served: list[InitServer] = []
    outcome = _node(cluster, served).run()
    assert outcome is not None
    assert outcome.path == CommitPath.REJOINED
    assert outcome.cluster_id == secrets.cluster_id
    assert served == []  # no init server on an initialized node
    assert cluster.authority.calls == ["IssueRejoinTicket"]
    assert _pcr15(node.tpm.tcti) == marked


def test_locked_node_without_state_is_refused(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster()
    assert cluster.node.lock.try_lock(b"c" * 32)
    with pytest.raises(NodeError, match="no node state"):
        _node(cluster, []).run()


def test_formatted_disk_without_state_is_refused(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster()  # make_node formatted the disk already; the passphrase is lost
    with pytest.raises(NodeError, match="LUKS header"):
        _node(cluster, []).run()


def _wipe(node: NodeParts) -> None:
    """A blank state disk, as on a first boot (the supervisor formats it itself)."""
    with node.disk.device.open("r+b") as handle:
        handle.write(bytes(1 << 20))


class RacingNode:
    """A supervisor with the real init server (aTLS on loopback) and the real join client."""

    def __init__(self, cluster: Cluster, tmp_path: Path) -> None:
        self.cluster = cluster
        self.port: int | None = None
        self.outcome: object = None
        node = cluster.node

        def make_init_server(key: DiskKey, callbacks: InitCallbacks) -> InitServer:
            return InitServer(
                metadata=node.metadata,
                node_lock=node.lock,
                state_disk=node.disk,
                initial_disk_key=key,
                installer=node.installer,
                control_plane=LocalControlPlane(tmp_path / "cp"),
                node_state_path=node.node_state_path,
                callbacks=callbacks,
            )

        def serve(servicer: InitServer) -> Callable[[float], None]:
            server = atls.AttestedServer(node.issuer())
            init_pb2_grpc.add_APIServicer_to_server(servicer, server.grpc_server)
            self.port = server.add_port("127.0.0.1:0")
            server.start()
            return lambda grace: server.stop(grace).wait(grace + 1)

        self.supervisor = Node(
            node_lock=node.lock,
            state_disk=node.disk,
            node_state_path=node.node_state_path,
            make_init_server=make_init_server,
            serve_init=serve,
            make_join_client=cluster.join_client,
            stop_grace_s=1.0,
        )
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        try:
            self.outcome = self.supervisor.run()
        except Exception as exc:
            self.outcome = exc

    def start(self) -> None:
        _wipe(self.cluster.node)
        self.thread.start()
        deadline = time.monotonic() + 30
        while self.port is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)

    def finish(self) -> object:
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()
        return self.outcome


def test_supervisor_reports_a_join_that_failed_after_its_lock(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    cluster = make_cluster()  # the ticket's API server is unreachable: registration fails
    racing = RacingNode(cluster, tmp_path)
    racing.start()
    outcome = racing.finish()
    assert isinstance(outcome, RebootRequiredError)  # no second join ticket: only a reboot
    assert "join failed after the node lock was taken" in str(outcome)
    assert _pcr15(cluster.node.tpm.tcti) == pcr15_for_cluster_id(
        cluster.authority.cluster.cluster_id
    )


def test_supervisor_keeps_serving_init_when_the_join_is_refused(
    make_cluster: Callable[..., Cluster], tmp_path: Path, tool: Path
) -> None:
    cluster = make_cluster()
    cluster.authority.edit = lambda response: setattr(response, "state_disk_key", b"short")
    racing = RacingNode(cluster, tmp_path)
    racing.start()
    deadline = time.monotonic() + 30
    while "IssueJoinTicket" not in cluster.authority.calls:  # the join client's ticket: refused
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    assert racing.thread.is_alive()  # no commit: the init server still serves
    request = init_request([component_for("kubeadm", tool, "/usr/bin/kubeadm")])
    with atls.connect(
        f"127.0.0.1:{racing.port}", [uninitialized_node_validator()], timeout=30
    ) as channel:
        responses = list(init_pb2_grpc.APIStub(channel.channel).Init(request, timeout=60))
    assert responses[-1].WhichOneof("kind") == "init_failure"  # no control-plane binaries
    outcome = racing.finish()
    assert isinstance(outcome, NodeError)
    assert "init failed after the node lock was taken" in str(outcome)
    secret = derive_measurement_secret(request.master_secret, request.master_salt)
    init_cluster_id = derive_cluster_id(secret, request.measurement_salt)
    assert _pcr15(cluster.node.tpm.tcti) == pcr15_for_cluster_id(init_cluster_id)


def test_supervisor_stops_on_shutdown(make_cluster: Callable[..., Cluster], tmp_path: Path) -> None:
    cluster = make_cluster()
    cluster.authority.edit = lambda response: setattr(response, "measurement_secret", b"")
    racing = RacingNode(cluster, tmp_path)
    racing.start()
    racing.supervisor.shutdown.set()
    assert racing.finish() is None
    assert _pcr15(cluster.node.tpm.tcti) == ZERO_PCR


def test_a_join_interrupted_after_its_lock_stops_the_node_saying_reboot(
    make_cluster: Callable[..., Cluster],
) -> None:
    """The bootstrapper died mid-join, the vTPM kept the lock: only a reboot gets it out."""
    cluster = make_cluster()
    node = cluster.node
    cluster_id = cluster.authority.cluster.cluster_id
    journal = journal_for(node.node_state_path)
    record = JournalRecord(Step.REKEY, node.disk.uuid(), JournalPath.JOIN, cluster_id)
    journal.record(record)
    assert node.lock.try_lock(cluster_id)
    with pytest.raises(NodeError, match="reboot the node") as stopped:
        _node(cluster, []).run()
    assert "join into cluster" in str(stopped.value)
    # The process says so with its own exit code, on which the node supervisor reboots.
    assert exit_code_for(stopped.value) == EXIT_REBOOT_REQUIRED
    assert journal.read() == record  # kept for the next boot


def test_a_lock_of_another_cluster_than_journaled_stops_the_node(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster()
    node = cluster.node
    journal_for(node.node_state_path).record(
        JournalRecord(Step.REKEY, node.disk.uuid(), JournalPath.INIT, b"a" * 32)
    )
    assert node.lock.try_lock(b"b" * 32)
    supervisor = _node(cluster, [])
    supervisor._read_pcr15 = lambda: _pcr15(node.tpm.tcti)
    with pytest.raises(NodeError, match="does not carry the mark"):
        supervisor.run()


def test_after_a_reboot_an_interrupted_join_reformats_the_disk_and_joins_again(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    """PCR 15 zero, the journal names a join: the disk (its passphrase lost) is re-formatted
    under the same UUID and the node joins again."""
    cluster = make_cluster()  # the ticket's API server is unreachable: registration fails
    node = cluster.node
    uuid = node.disk.uuid()
    journal_for(node.node_state_path).record(
        JournalRecord(Step.REKEY, uuid, JournalPath.JOIN, cluster.authority.cluster.cluster_id)
    )
    racing = RacingNode(cluster, tmp_path)
    racing.thread.start()  # no wipe: the header of the interrupted join is still there
    outcome = racing.finish()
    assert isinstance(outcome, NodeError)
    assert "join failed after the node lock was taken" in str(outcome)  # it got that far
    assert node.disk.uuid() == uuid
    assert node.disk.key_matches(DiskKey(cluster.authority.cluster.disk_key(uuid)))
    assert node.disk.keyslots() == [1]
    assert cluster.authority.calls == ["IssueJoinTicket"]


def test_a_foreign_luks_disk_with_a_journal_of_another_uuid_is_refused(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster()
    journal_for(cluster.node.node_state_path).record(
        JournalRecord(Step.FORMAT, "0b0e0c0d-1111-4222-8333-444455556666")
    )
    with pytest.raises(NodeError, match="not this node's disk"):
        _node(cluster, []).run()
