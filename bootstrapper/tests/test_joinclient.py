"""Join client against a JoinService behind real mutual aTLS (two swtpm vTPMs, cryptsetup).

The service side is ``TicketAuthority``: the JoinService's ticket semantics (real key
derivation, CSRs really signed by a CA) behind the real aTLS gate. Negative paths need only
swtpm and cryptsetup; the full join (Node object registered with the kubelet certificate) also
needs the loopback control plane and is skipped without the pinned Kubernetes binaries.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from constellation.attestation.identity import Role
from constellation.attestation.measurements import Measurement, Measurements, pcr15_for_cluster_id
from constellation.attestation.swtpm import Swtpm
from constellation.attestation.testing.platform import node_validator
from constellation.attestation.vtpm import open_tpm, read_pcrs
from constellation.bootstrapper.config import RetryPolicy
from constellation.bootstrapper.installer import ComponentHashMismatchError
from constellation.bootstrapper.joinclient import (
    JoinClient,
    JoinTimeoutError,
    RejoinError,
    TicketError,
    joinservice_measurements,
)
from constellation.bootstrapper.metadata import Endpoint, write_metadata_file
from constellation.bootstrapper.nodestate import NodeState, load_node_state, save_node_state
from constellation.bootstrapper.registration import KubeletFiles, RegistrationError, register_node
from constellation.bootstrapper.statedisk import DiskKey, StateDiskKeyError
from constellation.bootstrapper.testing import (
    ZERO_PCR,
    ClusterCA,
    ClusterSecrets,
    NodeParts,
    TicketAuthority,
    TicketEdit,
    component_for,
    join_channel_factory,
    make_node,
    measure_image,
    serve_join,
)

pytestmark = pytest.mark.swtpm

FAST_RETRY = RetryPolicy(
    initial_delay_s=0.05, max_delay_s=0.2, max_attempts=3, total_timeout_s=30, rpc_timeout_s=15
)
JOIN_EXPECTATION = Measurements({15: Measurement(ZERO_PCR)})  # join-config: PCR 15 unmarked
REJOIN_EXPECTATION = Measurements({15: Measurement(ZERO_PCR, warn_only=True)})
# The JoinService's node is an initialized node of the authority's cluster unless a test says
# otherwise (``make_setup(joinservice_mark=...)``).
OWN_CLUSTER = ClusterSecrets().cluster_id
OTHER_CLUSTER = b"some other cluster".ljust(32)


def _pcr15(tcti: str) -> bytes:
    with open_tpm(tcti) as esapi:
        _, values = read_pcrs(esapi, (15,))
    return values[15]


def _unreachable_registrar(**_: object) -> None:
    raise AssertionError("registration must not be reached on this path")


@dataclass
class JoinSetup:
    """A JoinService node and a joining worker node, both with real vTPMs."""

    node: NodeParts
    authority: TicketAuthority
    joinservice_measurements: Measurements
    endpoint: Endpoint
    stop: threading.Event
    joinservice_tpm: Swtpm

    def client(
        self,
        *,
        measurements: Measurements | None = None,
        register: Callable[..., None] = _unreachable_registrar,
        retry: RetryPolicy = FAST_RETRY,
    ) -> JoinClient:
        return JoinClient(
            metadata=self.node.metadata,
            connect=join_channel_factory(self.node, measurements or self.joinservice_measurements),
            node_lock=self.node.lock,
            state_disk=self.node.disk,
            installer=self.node.installer,
            kubelet_files=KubeletFiles(self.node.directory / "state" / "kubelet"),
            node_state_path=self.node.node_state_path,
            retry=retry,
            stop=self.stop,
            register=register,
        )


@pytest.fixture
def make_setup(
    tmp_path: Path, swtpm_factory: Callable[[int], list[Swtpm]]
) -> Iterator[Callable[..., JoinSetup]]:
    with ExitStack() as stack:

        def build(
            *,
            edit: TicketEdit | None = None,
            ca: ClusterCA | None = None,
            api_server_endpoint: str = "127.0.0.1:1",
            components: list | None = None,
            client_expectation: Measurements = JOIN_EXPECTATION,
            joinservice_mark: bytes | None = OWN_CLUSTER,
            joinservice_role: Role = Role.CONTROL_PLANE,
        ) -> JoinSetup:
            joinservice_tpm, node_tpm = swtpm_factory(2)
            log, measurements = measure_image(joinservice_tpm, b"control-plane image v1")
            authority = TicketAuthority(
                ClusterSecrets(),
                ca or ClusterCA.generate(),
                api_server_endpoint,
                components=components or [],
                edit=edit,
            )
            endpoint = stack.enter_context(
                serve_join(
                    authority,
                    joinservice_tpm,
                    log,
                    node_validator(client_expectation),
                    marked_for=joinservice_mark,
                    role=joinservice_role,
                )
            )
            node = make_node(
                tmp_path / "worker",
                node_tpm,
                name="worker-1",
                role=Role.WORKER,
                ip="127.0.0.2",
                endpoints=(endpoint,),
            )
            return JoinSetup(
                node, authority, measurements, endpoint, threading.Event(), joinservice_tpm
            )

        yield build


def _assert_not_joined(setup: JoinSetup) -> None:
    assert _pcr15(setup.node.tpm.tcti) == ZERO_PCR
    setup.node.disk.check_key(setup.node.initial_key)
    assert not setup.node.node_state_path.exists()


def test_joinservice_with_wrong_measurements_is_refused_before_any_request(
    make_setup: Callable[..., JoinSetup],
) -> None:
    setup = make_setup()
    other_image = Measurements({4: Measurement(b"\x44" * 32)})
    with pytest.raises(JoinTimeoutError) as info:
        setup.client(measurements=other_image).join(setup.node.initial_key)
    assert "pcr[4]" in str(info.value)
    assert setup.authority.calls == []  # the unverified service never saw a ticket request
    _assert_not_joined(setup)


def test_node_that_is_not_accepted_by_the_joinservice_gets_no_ticket(
    make_setup: Callable[..., JoinSetup],
) -> None:
    # The JoinService expects another image of the joining node (mutual: it checks us too).
    setup = make_setup(client_expectation=Measurements({4: Measurement(b"\x55" * 32)}))
    with pytest.raises(JoinTimeoutError, match="PERMISSION_DENIED"):
        setup.client().join(setup.node.initial_key)
    assert setup.authority.calls == []
    _assert_not_joined(setup)


def _wrong_key_cert(response) -> None:
    other = ClusterCA.generate()  # a certificate for some other key
    response.kubelet_cert = other.cert_pem


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: setattr(r, "state_disk_key", b"k" * 31), "state_disk_key"),
        (lambda r: setattr(r, "measurement_secret", b""), "measurement_secret"),
        (lambda r: setattr(r, "measurement_salt", b"s" * 33), "measurement_salt"),
        (lambda r: setattr(r, "api_server_endpoint", ""), "API server"),
        (lambda r: setattr(r, "ca_cert", b"junk"), "CA certificate"),
        (_wrong_key_cert, "not for this node's key"),
    ],
)
def test_unusable_ticket_is_refused_before_the_lock(
    make_setup: Callable[..., JoinSetup], edit: TicketEdit, message: str
) -> None:
    setup = make_setup(edit=edit)
    with pytest.raises(TicketError, match=message):
        setup.client().join(setup.node.initial_key)
    assert setup.authority.calls == ["IssueJoinTicket"]
    _assert_not_joined(setup)


def test_ticket_component_with_wrong_hash_is_refused_before_the_lock(
    make_setup: Callable[..., JoinSetup], tmp_path: Path
) -> None:
    artifact = tmp_path / "kubelet"
    artifact.write_bytes(b"original")
    component = component_for("kubelet", artifact, "/usr/bin/kubelet")
    artifact.write_bytes(b"swapped")
    setup = make_setup(components=[component])
    with pytest.raises(ComponentHashMismatchError, match="kubelet"):
        setup.client().join(setup.node.initial_key)
    _assert_not_joined(setup)
    assert not (setup.node.installer.install_root / "usr/bin/kubelet").exists()


def _set_endpoints(node: NodeParts, endpoints: tuple[Endpoint, ...]) -> None:
    """Rewrite the node's instance metadata with other control-plane endpoints."""
    write_metadata_file(
        node.metadata.path,
        dataclasses.replace(node.metadata.self(), control_plane_endpoints=endpoints),
    )


def test_joinservice_on_a_node_of_another_cluster_is_refused(
    make_setup: Callable[..., JoinSetup],
) -> None:
    # The service's own node carries the mark of a different cluster than its tickets name.
    setup = make_setup(joinservice_mark=OTHER_CLUSTER)
    with pytest.raises(TicketError, match="does not run on a node of the ticket's cluster"):
        setup.client().join(setup.node.initial_key)
    _assert_not_joined(setup)


def test_joinservice_on_an_unmarked_node_is_refused_before_any_request(
    make_setup: Callable[..., JoinSetup],
) -> None:
    """The genuine image on a machine that never joined a cluster: it could adopt the node
    (lock it for a cluster of its choosing, rekey its disk), so no request is ever sent."""
    setup = make_setup(joinservice_mark=None)
    with pytest.raises(JoinTimeoutError, match=r"pcr\[15\]") as info:
        setup.client().join(setup.node.initial_key)
    assert "never joined a cluster" in str(info.value)
    assert setup.authority.calls == []
    _assert_not_joined(setup)


def test_joinservice_on_a_worker_is_refused_before_any_request(
    make_setup: Callable[..., JoinSetup],
) -> None:
    """A marked node whose platform identity is a worker's does not run the JoinService."""
    setup = make_setup(joinservice_role=Role.WORKER)
    with pytest.raises(JoinTimeoutError, match=r"identity\.role") as info:
        setup.client().join(setup.node.initial_key)
    assert "control-plane" in str(info.value)
    assert setup.authority.calls == []
    _assert_not_joined(setup)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_retries_are_bounded_in_attempts_and_time(
    make_setup: Callable[..., JoinSetup],
) -> None:
    setup = make_setup()
    _set_endpoints(setup.node, (Endpoint("127.0.0.1", _closed_port()),))
    retry = RetryPolicy(initial_delay_s=0.05, max_delay_s=0.1, max_attempts=4, total_timeout_s=20)
    start = time.monotonic()
    with pytest.raises(JoinTimeoutError, match="after 4 attempts") as info:
        setup.client(retry=retry).join(setup.node.initial_key)
    assert time.monotonic() - start < 20
    assert "ATLSConnectionError" in str(info.value)
    _assert_not_joined(setup)


def test_stop_interrupts_the_join_client(make_setup: Callable[..., JoinSetup]) -> None:
    setup = make_setup()
    _set_endpoints(setup.node, ())
    slow = RetryPolicy(initial_delay_s=5, max_delay_s=5, max_attempts=100, total_timeout_s=500)
    client = setup.client(retry=slow)
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(client.join(setup.node.initial_key)))
    thread.start()
    time.sleep(0.5)
    setup.stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert result == [None]
    _assert_not_joined(setup)


def _as_joined(setup: JoinSetup) -> NodeState:
    """Put the node into the state a completed join leaves (lock, rekeyed disk, node state)."""
    cluster = setup.authority.cluster
    uuid = setup.node.disk.uuid()
    setup.node.disk.rekey(setup.node.initial_key, DiskKey(cluster.disk_key(uuid)))
    assert setup.node.lock.try_lock(cluster.cluster_id)
    state = NodeState(cluster.cluster_id, cluster.measurement_salt, Role.WORKER, uuid)
    save_node_state(setup.node.node_state_path, state)
    return state


def test_rejoin_after_restart_takes_no_second_lock(make_setup: Callable[..., JoinSetup]) -> None:
    setup = make_setup(client_expectation=REJOIN_EXPECTATION)
    state = _as_joined(setup)
    marked = _pcr15(setup.node.tpm.tcti)
    key = setup.client().rejoin(state)
    assert setup.authority.calls == ["IssueRejoinTicket"]
    setup.node.disk.check_key(key)
    assert _pcr15(setup.node.tpm.tcti) == marked == pcr15_for_cluster_id(state.cluster_id)


def test_rejoin_after_reboot_marks_pcr15_again(make_setup: Callable[..., JoinSetup]) -> None:
    setup = make_setup(client_expectation=REJOIN_EXPECTATION)
    cluster = setup.authority.cluster
    uuid = setup.node.disk.uuid()
    setup.node.disk.rekey(setup.node.initial_key, DiskKey(cluster.disk_key(uuid)))
    state = NodeState(cluster.cluster_id, cluster.measurement_salt, Role.WORKER, uuid)
    save_node_state(setup.node.node_state_path, state)  # PCR 15 still zero: a fresh boot
    setup.client().rejoin(state)
    assert _pcr15(setup.node.tpm.tcti) == pcr15_for_cluster_id(cluster.cluster_id)


def test_rejoin_with_a_key_that_does_not_open_the_disk_is_refused(
    make_setup: Callable[..., JoinSetup],
) -> None:
    setup = make_setup(client_expectation=REJOIN_EXPECTATION)
    cluster = setup.authority.cluster
    uuid = setup.node.disk.uuid()
    # The disk carries a key the cluster never issued (e.g. a swapped disk with the same UUID).
    setup.node.disk.rekey(setup.node.initial_key, DiskKey(b"\x01" * 32))
    assert setup.node.lock.try_lock(cluster.cluster_id)
    state = NodeState(cluster.cluster_id, cluster.measurement_salt, Role.WORKER, uuid)
    with pytest.raises(StateDiskKeyError):
        setup.client().rejoin(state)


def test_rejoin_against_a_joinservice_of_another_cluster_is_refused_before_any_request(
    make_setup: Callable[..., JoinSetup],
) -> None:
    """On a rejoin the node knows its cluster: any other mark (even of an initialized node)
    is refused before the disk UUID leaves the node, and its own mark is not taken again."""
    setup = make_setup(client_expectation=REJOIN_EXPECTATION, joinservice_mark=OTHER_CLUSTER)
    cluster = setup.authority.cluster
    uuid = setup.node.disk.uuid()
    disk_key = DiskKey(cluster.disk_key(uuid))
    setup.node.disk.rekey(setup.node.initial_key, disk_key)
    state = NodeState(cluster.cluster_id, cluster.measurement_salt, Role.WORKER, uuid)
    save_node_state(setup.node.node_state_path, state)  # PCR 15 still zero: a fresh boot
    with pytest.raises(JoinTimeoutError, match=r"pcr\[15\]") as info:
        setup.client().rejoin(state)
    assert "a node of this node's cluster" in str(info.value)
    assert setup.authority.calls == []
    assert _pcr15(setup.node.tpm.tcti) == ZERO_PCR
    setup.node.disk.check_key(disk_key)


def test_rejoin_ticket_from_another_cluster_is_refused(
    make_setup: Callable[..., JoinSetup],
) -> None:
    setup = make_setup(client_expectation=REJOIN_EXPECTATION)
    state = _as_joined(setup)
    setup.authority.cluster = ClusterSecrets(master_secret=b"N" * 32)
    with pytest.raises(RejoinError, match="another cluster"):
        setup.client().rejoin(state)


@pytest.mark.kube
@pytest.mark.slow
def test_join_registers_the_node_with_its_kubelet_certificate(
    make_setup: Callable[..., JoinSetup], control_plane, kube_client
) -> None:
    ca = ClusterCA.load(control_plane.ca_cert_path, control_plane.ca_key_path)
    # The JoinService runs on an initialized node of the cluster its tickets are for.
    setup = make_setup(ca=ca, api_server_endpoint=control_plane.server)
    assert setup.authority.cluster.cluster_id == OWN_CLUSTER
    outcome = setup.client(register=register_node).join(setup.node.initial_key)
    assert outcome is not None
    cluster = setup.authority.cluster
    assert outcome.cluster_id == cluster.cluster_id
    assert _pcr15(setup.node.tpm.tcti) == pcr15_for_cluster_id(cluster.cluster_id)
    uuid = setup.node.disk.uuid()
    setup.node.disk.check_key(DiskKey(cluster.disk_key(uuid)))
    assert not setup.node.disk.key_matches(setup.node.initial_key)
    state = load_node_state(setup.node.node_state_path)
    assert state.cluster_id == cluster.cluster_id
    key_file = setup.node.directory / "state" / "kubelet" / "kubelet.key"
    assert key_file.stat().st_mode & 0o777 == 0o600

    from kubernetes import client as k8s

    node = k8s.CoreV1Api(kube_client).read_node("worker-1")
    assert node.metadata.name == "worker-1"

    # The kubelet certificate is an identity, not a master key: the API server's Node
    # authorizer refuses it for any other node's object.
    with pytest.raises(RegistrationError, match="HTTP 403"):
        register_node(
            api_server_endpoint=control_plane.server,
            files=KubeletFiles(setup.node.directory / "state" / "kubelet"),
            node_name="worker-2",
            node_ip="127.0.0.3",
        )
    # No kubelet runs here, so nothing reports the node Ready (documented in registration).
    conditions = node.status.conditions or []
    assert not any(c.type == "Ready" and c.status == "True" for c in conditions)


def test_joinservice_expectation_keeps_every_pcr_but_15() -> None:
    image = Measurements(
        {4: Measurement(b"\x04" * 32), 9: Measurement(b"\x09" * 32, warn_only=True)}
    ).with_pcr15(None)
    expected = joinservice_measurements(image)
    assert dict(expected) == {4: image[4], 9: image[9]}
