"""A restarted node with node state: PCR 15 re-marked, rejoin ticket, control-plane restart.

A restart on the same boot (the recorded boot ID is the current one *and* PCR 15 carries the
cluster's mark) restarts the control plane from its files and asks nobody for anything; any
other restart (a reboot, a reset TPM, a damaged record) takes the rejoin path.

Real swtpm vTPMs, a LUKS2 header and a ticket authority behind real mutual aTLS whose rejoin
policy is the JoinService's: the node must attest with PCR 15 = its cluster's mark. The control
plane is a recording stand-in here (the real restart runs in ``test_controlplane_node.py``);
what is checked is *when* the supervisor restarts it.
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from constellation.attestation.identity import Role
from constellation.attestation.measurements import Measurement, Measurements, pcr15_for_cluster_id
from constellation.attestation.swtpm import Swtpm
from constellation.attestation.testing.platform import node_validator
from constellation.attestation.vtpm import open_tpm, read_pcrs
from constellation.bootstrapper.bootid import (
    DISK_OPEN_FILE,
    DiskOpenRecord,
    load_disk_open,
    read_boot_id,
    save_disk_open,
)
from constellation.bootstrapper.config import RetryPolicy
from constellation.bootstrapper.initserver import InitServer
from constellation.bootstrapper.joinclient import JoinClient, JoinTimeoutError, RejoinError
from constellation.bootstrapper.metadata import (
    Endpoint,
    FileMetadata,
    InstanceMetadata,
    write_metadata_file,
)
from constellation.bootstrapper.node import CommitPath, Node
from constellation.bootstrapper.nodestate import NodeState, save_node_state
from constellation.bootstrapper.recoveryserver import RecoveryServer
from constellation.bootstrapper.registration import KubeletFiles
from constellation.bootstrapper.statedisk import DiskKey
from constellation.bootstrapper.testing import (
    ClusterCA,
    ClusterSecrets,
    NodeParts,
    TicketAuthority,
    join_channel_factory,
    make_node,
    measure_image,
    serve_join,
)

pytestmark = pytest.mark.swtpm

RETRY = RetryPolicy(
    initial_delay_s=0.05, max_delay_s=0.1, max_attempts=3, total_timeout_s=10, rpc_timeout_s=10
)


class RecordingControlPlane:
    def __init__(self, installed: bool = True) -> None:
        self.installed = installed
        self.restarts = 0

    def is_installed(self) -> bool:
        return self.installed

    def restart(self) -> bytes:
        self.restarts += 1
        return b"kubeconfig"

    def forget(self) -> None:
        self.installed = False


class Restarted:
    """A node of ``secrets``' cluster after a reboot (PCR 15 reset), and a JoinService.

    The JoinService runs on an initialized control-plane node of the node's own cluster: a
    rejoining node trusts no other. ``authority`` is whose tickets that service hands out.
    """

    def __init__(
        self,
        stack: ExitStack,
        tmp_path: Path,
        tpms: list[Swtpm],
        authority: ClusterSecrets,
        role: Role,
    ) -> None:
        joinservice_tpm, node_tpm = tpms
        log, self.joinservice_measurements = measure_image(joinservice_tpm, b"cp image")
        self.secrets = ClusterSecrets()
        self.authority = TicketAuthority(authority, ClusterCA.generate(), "127.0.0.1:1")
        # The JoinService's rejoin policy: PCR 15 must carry the node's cluster mark.
        expectation = Measurements({15: Measurement(pcr15_for_cluster_id(self.secrets.cluster_id))})
        endpoint = stack.enter_context(
            serve_join(
                self.authority,
                joinservice_tpm,
                log,
                node_validator(expectation),
                marked_for=self.secrets.cluster_id,
            )
        )
        self.node: NodeParts = make_node(
            tmp_path / "node", node_tpm, role=role, endpoints=(endpoint,)
        )
        uuid = self.node.disk.uuid()
        self.node.disk.rekey(self.node.initial_key, DiskKey(self.secrets.disk_key(uuid)))
        save_node_state(
            self.node.node_state_path,
            NodeState(self.secrets.cluster_id, self.secrets.measurement_salt, role, uuid),
        )
        self.served: list[RecoveryServer] = []

    def supervisor(
        self,
        control_plane: RecordingControlPlane,
        *,
        unreachable: bool = False,
        boot_id_path: Path | None = None,
    ) -> Node:
        def make_join_client(stop: threading.Event) -> JoinClient:
            if unreachable:
                return _unreachable_client(self, stop)
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

        def no_init(key: DiskKey, callbacks: object) -> InitServer:
            raise AssertionError("a node with state must not serve Init")

        def serve_recovery(servicer: RecoveryServer) -> Callable[[float], None]:
            self.served.append(servicer)
            raise AssertionError("a node whose rejoin succeeded or was refused must not recover")

        return Node(
            node_lock=self.node.lock,
            state_disk=self.node.disk,
            node_state_path=self.node.node_state_path,
            make_init_server=no_init,  # type: ignore[arg-type]
            serve_init=lambda servicer: lambda grace: None,
            make_join_client=make_join_client,
            control_plane=control_plane,
            serve_recovery=serve_recovery,
            read_pcr15=self.pcr15,
            boot_id=None if boot_id_path is None else functools.partial(read_boot_id, boot_id_path),
        )

    @property
    def disk_open_path(self) -> Path:
        return self.node.node_state_path.parent / DISK_OPEN_FILE

    def boot(self) -> Path:
        """This boot's ID, in a file the way the kernel (or mini's firmware step) keeps it."""
        path = self.node.directory / "boot_id"
        path.write_text(f"{uuid.uuid4()}\n")
        return path

    def opened_on(self, boot_id_path: Path) -> None:
        """As if a run of this boot had committed: its disk-open record names this boot."""
        save_disk_open(
            self.disk_open_path,
            DiskOpenRecord(read_boot_id(boot_id_path), self.secrets.cluster_id),
        )

    def mark(self) -> None:
        """PCR 15 as the run that committed on this boot left it."""
        assert self.node.lock.try_lock(self.secrets.cluster_id)

    def pcr15(self) -> bytes:
        with open_tpm(self.node.tpm.tcti) as esapi:
            _, values = read_pcrs(esapi, (15,))
        return values[15]


@pytest.fixture
def restarted(
    tmp_path: Path, swtpm_factory: Callable[[int], list[Swtpm]]
) -> Iterator[Callable[..., Restarted]]:
    with ExitStack() as stack:
        yield lambda authority=None, role=Role.CONTROL_PLANE: Restarted(
            stack, tmp_path, swtpm_factory(2), authority or ClusterSecrets(), role
        )


def test_control_plane_restarts_after_the_rejoin_confirmed_its_disk_key(
    restarted: Callable[..., Restarted],
) -> None:
    node = restarted()
    assert node.pcr15() == bytes(32)  # the reboot reset it
    control_plane = RecordingControlPlane()
    outcome = node.supervisor(control_plane).run()
    assert outcome is not None
    assert outcome.path == CommitPath.REJOINED
    assert node.pcr15() == pcr15_for_cluster_id(node.secrets.cluster_id)
    assert node.authority.calls == ["IssueRejoinTicket"]
    assert control_plane.restarts == 1
    assert node.served == []


def test_a_rejoin_ticket_of_another_cluster_restarts_nothing(
    restarted: Callable[..., Restarted],
) -> None:
    node = restarted(authority=ClusterSecrets(master_secret=b"O" * 32))
    control_plane = RecordingControlPlane()
    with pytest.raises(RejoinError):
        node.supervisor(control_plane).run()
    assert control_plane.restarts == 0
    assert node.served == []


def test_a_worker_restarts_no_control_plane(restarted: Callable[..., Restarted]) -> None:
    node = restarted(role=Role.WORKER)
    control_plane = RecordingControlPlane()
    outcome = node.supervisor(control_plane).run()
    assert outcome is not None
    assert outcome.path == CommitPath.REJOINED
    assert control_plane.restarts == 0


def test_a_node_without_control_plane_files_does_not_wait_for_recovery(
    restarted: Callable[..., Restarted],
) -> None:
    """A control-plane node that joined (no restart record) fails like a worker, no recovery."""
    node = restarted()
    control_plane = RecordingControlPlane(installed=False)
    with pytest.raises(JoinTimeoutError):
        node.supervisor(control_plane, unreachable=True).run()
    assert control_plane.restarts == 0
    assert node.served == []


def _unreachable_client(node: Restarted, stop: threading.Event) -> JoinClient:
    """A client whose metadata names a JoinService endpoint where nothing listens."""
    path = node.node.directory / "no-joinservice.json"
    current = node.node.metadata.self()
    write_metadata_file(
        path,
        InstanceMetadata(
            name=current.name,
            role=current.role,
            private_ip=current.private_ip,
            init_secret_hash=node.node.metadata.init_secret_hash(),
            control_plane_endpoints=(Endpoint("127.0.0.1", 1),),
        ),
    )
    return JoinClient(
        metadata=FileMetadata(path),
        connect=join_channel_factory(node.node, node.joinservice_measurements, timeout=1),
        node_lock=node.node.lock,
        state_disk=node.node.disk,
        installer=node.node.installer,
        kubelet_files=KubeletFiles(node.node.directory / "state" / "kubelet"),
        node_state_path=node.node.node_state_path,
        retry=RETRY,
        stop=stop,
    )


def test_a_same_boot_restart_restarts_the_control_plane_without_a_rejoin(
    restarted: Callable[..., Restarted],
) -> None:
    node = restarted()
    boot = node.boot()
    node.opened_on(boot)
    node.mark()
    marked = node.pcr15()
    control_plane = RecordingControlPlane()
    with capture_logs() as logs:
        outcome = node.supervisor(control_plane, boot_id_path=boot).run()
    assert outcome is not None
    assert outcome.path == CommitPath.RESTARTED
    assert outcome.cluster_id == node.secrets.cluster_id
    assert control_plane.restarts == 1
    assert node.authority.calls == []  # no ticket, no key: nothing was asked of anyone
    assert node.pcr15() == marked  # no second extension
    assert node.served == []
    assert "node.same_boot_restart" in [entry["event"] for entry in logs]


def test_a_worker_restarted_on_the_same_boot_fetches_nothing(
    restarted: Callable[..., Restarted],
) -> None:
    node = restarted(role=Role.WORKER)
    boot = node.boot()
    node.opened_on(boot)
    node.mark()
    control_plane = RecordingControlPlane()
    outcome = node.supervisor(control_plane, boot_id_path=boot).run()
    assert outcome is not None
    assert outcome.path == CommitPath.RESTARTED
    assert control_plane.restarts == 0
    assert node.authority.calls == []


def test_another_boot_id_takes_the_rejoin_path_and_records_the_new_boot(
    restarted: Callable[..., Restarted],
) -> None:
    """A reboot: the record names the previous boot (here PCR 15 is even marked again)."""
    node = restarted()
    node.opened_on(node.boot())
    node.mark()
    boot = node.boot()  # the next boot draws a new ID
    control_plane = RecordingControlPlane()
    outcome = node.supervisor(control_plane, boot_id_path=boot).run()
    assert outcome is not None
    assert outcome.path == CommitPath.REJOINED
    assert node.authority.calls == ["IssueRejoinTicket"]
    assert control_plane.restarts == 1
    assert load_disk_open(node.disk_open_path) == DiskOpenRecord(
        read_boot_id(boot), node.secrets.cluster_id
    )


def test_the_same_boot_id_without_the_pcr15_mark_is_not_the_same_boot(
    restarted: Callable[..., Restarted],
) -> None:
    """The TPM was reset (PCR 15 zero) while the boot ID file stayed: rejoin, re-mark."""
    node = restarted()
    boot = node.boot()
    node.opened_on(boot)
    assert node.pcr15() == bytes(32)
    control_plane = RecordingControlPlane()
    with capture_logs() as logs:
        outcome = node.supervisor(control_plane, boot_id_path=boot).run()
    assert outcome is not None
    assert outcome.path == CommitPath.REJOINED
    assert node.authority.calls == ["IssueRejoinTicket"]
    assert node.pcr15() == pcr15_for_cluster_id(node.secrets.cluster_id)
    assert "node.same_boot_restart" not in [entry["event"] for entry in logs]


def test_the_same_boot_id_with_another_clusters_mark_is_not_the_same_boot(
    restarted: Callable[..., Restarted],
) -> None:
    """PCR 15 carries a mark, but not this cluster's: no restart; the rejoin is refused."""
    node = restarted(role=Role.WORKER)
    boot = node.boot()
    node.opened_on(boot)
    assert node.node.lock.try_lock(b"o" * 32)
    control_plane = RecordingControlPlane()
    with pytest.raises(JoinTimeoutError):
        node.supervisor(control_plane, boot_id_path=boot).run()
    assert control_plane.restarts == 0


def test_a_record_of_another_cluster_is_not_the_same_boot(
    restarted: Callable[..., Restarted],
) -> None:
    node = restarted()
    boot = node.boot()
    save_disk_open(node.disk_open_path, DiskOpenRecord(read_boot_id(boot), b"o" * 32))
    node.mark()
    outcome = node.supervisor(RecordingControlPlane(), boot_id_path=boot).run()
    assert outcome is not None
    assert outcome.path == CommitPath.REJOINED


@pytest.mark.parametrize(
    "damage",
    ["corrupt-record", "missing-record", "missing-boot-id", "corrupt-boot-id"],
)
def test_a_damaged_record_or_boot_id_takes_the_rejoin_path(
    restarted: Callable[..., Restarted], damage: str
) -> None:
    node = restarted()
    boot = node.boot()
    node.opened_on(boot)
    node.mark()
    if damage == "corrupt-record":
        node.disk_open_path.write_bytes(b'{"version": 1, "bootID": ')
    elif damage == "missing-record":
        node.disk_open_path.unlink()
    elif damage == "missing-boot-id":
        boot.unlink()
    else:
        boot.write_bytes(b"\xff not a boot id")
    control_plane = RecordingControlPlane()
    with capture_logs() as logs:
        outcome = node.supervisor(control_plane, boot_id_path=boot).run()
    assert outcome is not None
    assert outcome.path == CommitPath.REJOINED
    assert node.authority.calls == ["IssueRejoinTicket"]
    assert control_plane.restarts == 1
    events = [entry["event"] for entry in logs]
    assert "node.same_boot_restart" not in events
    if damage.startswith("corrupt"):
        assert "node.same_boot_unknown" in events
