"""Test harness of a real node for bootstrapper tests: swtpm, LUKS2 header, aTLS init server.

Used by the tests of the bootstrapper (and the e2e suite): they import :func:`make_node` and
:func:`serve_init` so each test builds exactly the node it needs. Everything is real: the
node's vTPM is a swtpm, the state disk a LUKS2 header driven by cryptsetup, the init server is
served over aTLS where the node attests and the client verifies it.

Every node is what a platform gives a real one (``attestation.testing.platform``): an AK
persisted in its vTPM and certified by the test platform CA with the node's name and role, and
a TCG event log of what its "firmware" measured. Every validator here trusts that CA and
requires the event log, as the product's validators do; a JoinService is trusted only on a
control-plane node whose PCR 15 carries a node-lock mark (``serve_join(marked_for=...)``).
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from constellation.attestation import atls
from constellation.attestation.atls import verified_peer
from constellation.attestation.eventlog import encode_header
from constellation.attestation.evidence import Validator
from constellation.attestation.identity import Role
from constellation.attestation.identity.ca import PlatformCA
from constellation.attestation.identity.policy import RequireRole
from constellation.attestation.kdf import derive_cluster_id, derive_key, derive_measurement_secret
from constellation.attestation.measurements import Measurement, Measurements
from constellation.attestation.nodelock import NodeLock
from constellation.attestation.swtpm import Swtpm
from constellation.attestation.testing.certs import self_signed
from constellation.attestation.testing.platform import (
    cached_platform_ca,
    measure_boot,
    node_issuer,
    node_validator,
    provision_node,
)
from constellation.attestation.vtpm import (
    VtpmIssuer,
    firmware_measure,
    open_tpm,
    read_pcrs,
)
from constellation.bootstrapper.config import BootstrapperConfig
from constellation.bootstrapper.initsecret import InitSecret, hash_init_secret
from constellation.bootstrapper.initserver import (
    ControlPlaneParameters,
    ControlPlaneStarter,
    InitCallbacks,
    InitServer,
    LocalControlPlane,
)
from constellation.bootstrapper.installer import ComponentInstaller, default_source_dirs
from constellation.bootstrapper.joinclient import (
    ChannelFactory,
)
from constellation.bootstrapper.joinclient import (
    joinservice_measurements as joinservice_expectation,
)
from constellation.bootstrapper.joinservicetrust import JoinServiceValidator
from constellation.bootstrapper.metadata import (
    Endpoint,
    FileMetadata,
    InstanceMetadata,
    write_metadata_file,
)
from constellation.bootstrapper.registration import KubeletFiles
from constellation.bootstrapper.statedisk import FAST_PBKDF2, DiskKey, StateDisk
from constellation.proto import components_pb2, init_pb2, init_pb2_grpc, join_pb2, join_pb2_grpc

INIT_SECRET = b"correct horse battery staple 123"
DISK_SIZE = 20 * 1024 * 1024
ZERO_PCR = bytes(32)


def require_cryptsetup() -> None:
    if shutil.which("cryptsetup") is None:
        pytest.skip("cryptsetup is not installed (Debian package: cryptsetup-bin)")


@dataclass
class NodeParts:
    """The real collaborators of one node."""

    directory: Path
    name: str
    role: Role
    tpm: Swtpm
    lock: NodeLock
    disk: StateDisk
    initial_key: DiskKey
    metadata: FileMetadata
    installer: ComponentInstaller
    # What the platform gave the node: its AK certificate (DER) and its firmware's event log.
    ak_certificate: bytes
    event_log: bytes

    @property
    def node_state_path(self) -> Path:
        return self.directory / "state" / "node-state.json"

    def issuer(self) -> VtpmIssuer:
        """The node's attestation, as the bootstrapper wires it: certified AK, event log."""
        return VtpmIssuer(
            self.tpm.tcti, event_log=self.event_log, ak_certificate=self.ak_certificate
        )


def boot_log(tpm: Swtpm, parts: Sequence[tuple[int, bytes]] = ()) -> bytes:
    """Mini-mode "firmware": measure ``parts`` into ``tpm`` and return its TCG event log.

    Without parts the log is a well-formed log of no events (the firmware measured nothing):
    validators require a log, and this one replays to whatever the PCRs it names hold.
    """
    return measure_boot(tpm.tcti, parts, log=encode_header())


def make_node(
    directory: Path,
    tpm: Swtpm,
    *,
    name: str = "node-0",
    role: Role = Role.CONTROL_PLANE,
    ip: str = "127.0.0.1",
    endpoints: tuple[Endpoint, ...] = (),
    boot: Sequence[tuple[int, bytes]] = (),
    ca: PlatformCA | None = None,
) -> NodeParts:
    """A node on ``tpm`` whose AK ``ca`` (default: the test platform CA) certified as
    ``name``/``role``, after its firmware measured ``boot`` (default: nothing, so the PCRs a
    test read before stay as they were)."""
    require_cryptsetup()
    event_log = boot_log(tpm, boot)
    ak_certificate = provision_node(tpm.tcti, ca or cached_platform_ca(), name, role)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "state").mkdir()
    disk_path = directory / "disk.img"
    with disk_path.open("wb") as handle:
        handle.truncate(DISK_SIZE)
    disk = StateDisk(disk_path, pbkdf=FAST_PBKDF2)
    initial_key = disk.format()
    metadata_path = directory / "metadata.json"
    write_metadata_file(
        metadata_path,
        InstanceMetadata(
            name=name,
            role=role,
            private_ip=ip,
            init_secret_hash=hash_init_secret(InitSecret(INIT_SECRET), cost=4),
            control_plane_endpoints=endpoints,
        ),
    )
    return NodeParts(
        directory=directory,
        name=name,
        role=role,
        tpm=tpm,
        lock=NodeLock(tpm.tcti),
        disk=disk,
        initial_key=initial_key,
        metadata=FileMetadata(metadata_path),
        # The test's directory stands in for the node image's artifact directory.
        installer=ComponentInstaller(
            directory / "root",
            source_dirs=(directory.parent, *default_source_dirs()),
            http_timeout_s=5,
            total_timeout_s=60,
        ),
        ak_certificate=ak_certificate,
        event_log=event_log,
    )


def uninitialized_node_validator(
    *, ca: PlatformCA | None = None, role: Role | None = Role.CONTROL_PLANE
) -> Validator:
    """What the CLI checks before sending Init: an AK that ``ca`` (default: the test platform
    CA) certified for a node of ``role`` (``None``: any role, for tests of what a node itself
    refuses), a replaying event log, and PCR 15 still zero."""
    validator = node_validator(Measurements({15: Measurement(expected=ZERO_PCR)}), ca=ca)
    if role is None:
        return validator
    return RequireRole(
        validator, role, why="Init (and the master secret) only go to a control-plane node"
    )


@contextmanager
def serve_init(
    node: NodeParts,
    control_plane: ControlPlaneStarter,
    callbacks: InitCallbacks | None = None,
) -> Iterator[str]:
    """Serve the node's init server over aTLS on a free loopback port; yield ``host:port``."""
    servicer = InitServer(
        metadata=node.metadata,
        node_lock=node.lock,
        state_disk=node.disk,
        initial_disk_key=node.initial_key,
        installer=node.installer,
        control_plane=control_plane,
        node_state_path=node.node_state_path,
        callbacks=callbacks,
    )
    server = atls.AttestedServer(node.issuer())
    init_pb2_grpc.add_APIServicer_to_server(servicer, server.grpc_server)
    port = server.add_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None).wait(5)


def call_init(
    target: str, request: init_pb2.InitRequest, *, validator: Validator | None = None
) -> list[init_pb2.InitResponse]:
    """Attest the node like the CLI does, then stream Init; raises grpc.RpcError on a status.

    Messages received before an error are attached to the error as ``received``.
    """
    received: list[init_pb2.InitResponse] = []
    validators = [validator or uninitialized_node_validator()]
    with atls.connect(target, validators, timeout=30) as channel:
        try:
            for response in init_pb2_grpc.APIStub(channel.channel).Init(request, timeout=300):
                received.append(response)
        except Exception as exc:
            exc.received = received  # type: ignore[attr-defined]
            raise
    return received


def component_for(name: str, source: Path, install_path: str) -> components_pb2.Component:
    digest = hashlib.sha256()
    with source.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return components_pb2.Component(
        name=name,
        url=source.as_uri(),
        hash="sha256:" + digest.hexdigest(),
        install_path=install_path,
    )


def init_request(
    components: list[components_pb2.Component], *, secret: bytes = INIT_SECRET
) -> init_pb2.InitRequest:
    return init_pb2.InitRequest(
        master_secret=b"m" * 32,
        master_salt=b"s" * 32,
        measurement_salt=bytes(range(32)),
        init_secret=secret,
        kubernetes_version="v1.31.1",
        kubernetes_components=components,
        cluster_name="test",
    )


# -- a JoinService for join-client tests ------------------------------------------------------


def measure_image(tpm: Swtpm, image: bytes) -> tuple[bytes, Measurements]:
    """Mini-mode "firmware": measure ``image`` into PCR 4; return the event log and the
    image's measurements (PCR 4 = that image; PCR 15 is up to the verifier)."""
    log = firmware_measure(tpm.tcti, b"", 4, hashlib.sha256(image).digest())
    with open_tpm(tpm.tcti) as esapi:
        _, values = read_pcrs(esapi, (4,))
    return log, Measurements({4: Measurement(values[4])})


@dataclass
class ClusterSecrets:
    """What a real cluster derives tickets from (DESIGN.md §3)."""

    master_secret: bytes = b"M" * 32
    master_salt: bytes = b"S" * 32
    measurement_salt: bytes = bytes(range(100, 132))

    @property
    def measurement_secret(self) -> bytes:
        return derive_measurement_secret(self.master_secret, self.master_salt)

    @property
    def cluster_id(self) -> bytes:
        return derive_cluster_id(self.measurement_secret, self.measurement_salt)

    def disk_key(self, disk_uuid: str) -> bytes:
        return derive_key(self.master_secret, self.master_salt, "key-" + disk_uuid.lower(), 32)


@dataclass
class ClusterCA:
    """A cluster CA (the control plane's, in Kubernetes tests) that signs kubelet CSRs."""

    key: ec.EllipticCurvePrivateKey
    cert_pem: bytes

    @classmethod
    def generate(cls) -> ClusterCA:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self_signed(key, "kubernetes")
        return cls(key, cert.public_bytes(serialization.Encoding.PEM))

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> ClusterCA:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise TypeError("unsupported CA key type")
        return cls(key, cert_path.read_bytes())  # type: ignore[arg-type]

    def sign_kubelet_csr(self, csr_pem: bytes) -> bytes:
        """Sign like the JoinService: subject and IP SANs from the CSR, client+server auth."""
        csr = x509.load_pem_x509_csr(csr_pem)
        ca = x509.load_pem_x509_certificate(self.cert_pem)
        now = datetime.datetime.now(datetime.UTC)
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(ca.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)


TicketEdit = Callable[[join_pb2.IssueJoinTicketResponse], None]


class TicketAuthority(join_pb2_grpc.APIServicer):
    """The JoinService's ticket semantics for join-client tests, behind real mutual aTLS.

    Keys come from the real derivations, kubelet certificates are really signed by ``ca``, and
    no handler runs before the aTLS gate verified the caller (``verified_peer()``). ``edit``
    lets a test corrupt a ticket to check that the client refuses it. ``calls`` records which
    methods ran (a test asserts that a refused server never received a ticket request).
    """

    def __init__(
        self,
        cluster: ClusterSecrets,
        ca: ClusterCA,
        api_server_endpoint: str,
        components: Sequence[components_pb2.Component] = (),
        edit: TicketEdit | None = None,
    ) -> None:
        self.cluster = cluster
        self.ca = ca
        self.api_server_endpoint = api_server_endpoint
        self.components = list(components)
        self.edit = edit
        self.calls: list[str] = []

    def IssueJoinTicket(
        self, request: join_pb2.IssueJoinTicketRequest, context: grpc.ServicerContext
    ) -> join_pb2.IssueJoinTicketResponse:
        verified_peer()
        self.calls.append("IssueJoinTicket")
        response = join_pb2.IssueJoinTicketResponse(
            state_disk_key=self.cluster.disk_key(request.disk_uuid),
            measurement_salt=self.cluster.measurement_salt,
            measurement_secret=self.cluster.measurement_secret,
            kubelet_cert=self.ca.sign_kubelet_csr(request.certificate_request),
            api_server_endpoint=self.api_server_endpoint,
            token=f"{secrets.token_hex(3)}.{secrets.token_hex(8)}",
            kubernetes_components=self.components,
            ca_cert=self.ca.cert_pem,
        )
        if self.edit is not None:
            self.edit(response)
        return response

    def IssueRejoinTicket(
        self, request: join_pb2.IssueRejoinTicketRequest, context: grpc.ServicerContext
    ) -> join_pb2.IssueRejoinTicketResponse:
        verified_peer()
        self.calls.append("IssueRejoinTicket")
        return join_pb2.IssueRejoinTicketResponse(
            state_disk_key=self.cluster.disk_key(request.disk_uuid),
            measurement_secret=self.cluster.measurement_secret,
        )


@contextmanager
def serve_join(
    authority: TicketAuthority,
    tpm: Swtpm,
    event_log: bytes,
    client_validator: Validator,
    *,
    marked_for: bytes | None,
    name: str = "joinservice-host",
    role: Role = Role.CONTROL_PLANE,
) -> Iterator[Endpoint]:
    """Serve ``authority`` over mutual aTLS, attesting with ``tpm`` and verifying clients.

    The service's node is certified as ``name``/``role`` by the test platform CA. Joining nodes
    trust a JoinService only on an initialized node: ``marked_for`` is the cluster ID whose
    node-lock mark PCR 15 gets before serving, ``None`` leaves the node unmarked (a genuine
    image that never joined a cluster, which a joining node must refuse).
    """
    if marked_for is not None and not NodeLock(tpm.tcti).try_lock(marked_for):
        raise RuntimeError("the JoinService's node carries a node-lock mark already")
    issuer = node_issuer(tpm.tcti, name, role, event_log=event_log)
    server = atls.AttestedServer(issuer, client_validators=[client_validator])
    join_pb2_grpc.add_APIServicer_to_server(authority, server.grpc_server)
    port = server.add_port("127.0.0.1:0")
    server.start()
    try:
        yield Endpoint("127.0.0.1", port)
    finally:
        server.stop(None).wait(5)


def join_channel_factory(
    node: NodeParts,
    joinservice_measurements: Measurements,
    *,
    ca: PlatformCA | None = None,
    timeout: float = 10.0,
) -> ChannelFactory:
    """What the bootstrapper wires: mutual aTLS, the node attests with its certified AK, and it
    verifies the service: the image, an AK rooted in ``ca`` (default: the test platform CA), a
    replaying event log, and (``JoinServiceValidator``) a marked control-plane node."""
    issuer = node.issuer()
    validator = node_validator(joinservice_expectation(joinservice_measurements), ca=ca)

    def connect(target: str, *, cluster_id: bytes | None = None) -> atls.AttestedChannel:
        checked = JoinServiceValidator(validator, cluster_id=cluster_id)
        return atls.connect(target, [checked], issuer=issuer, timeout=timeout)

    return connect


# -- a bootstrapper process with a stand-in control plane -------------------------------------

STAND_IN_KUBECONFIG = b"apiVersion: v1\nkind: Config\n# stand-in control plane\n"


class StandInControlPlane(LocalControlPlane):
    """A control plane that starts nothing: it records the start (its restart record, so the
    node counts as running one) and returns a fixed kubeconfig.

    For process tests of the steps around the control plane (the journal, crash recovery),
    which would otherwise spend most of their time bringing up etcd and kube-apiserver; the
    real control plane's start is tested in ``test_controlplane_node.py`` and ``test_main.py``.
    """

    def __call__(self, parameters: ControlPlaneParameters) -> bytes:
        self.restart_record_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.restart_record_path.write_text(parameters.node_name + "\n")
        return STAND_IN_KUBECONFIG

    def restart(self) -> bytes:
        return STAND_IN_KUBECONFIG

    def stop(self) -> None:
        return None


def main_with_stand_in_control_plane(argv: Sequence[str] | None = None) -> int:
    """``constellation-bootstrapper`` with :class:`StandInControlPlane` (process tests)."""
    from constellation.bootstrapper.__main__ import main

    def make(config: BootstrapperConfig, kubelet_files: KubeletFiles) -> LocalControlPlane:
        return StandInControlPlane(config.control_plane_root, kubelet_files=kubelet_files)

    return main(argv, make_control_plane=make)


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (for a server the test starts next)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_node_files(
    directory: Path,
    tcti: str,
    port: int,
    *,
    name: str = "node-0",
    role: Role = Role.CONTROL_PLANE,
    **overrides: object,
) -> dict[str, object]:
    """A node's files as mini mode writes them, and the bootstrapper configuration naming them.

    A sparse 20 MiB state disk, instance metadata (with the init secret's hash), the
    JoinService's measurements, an AK persisted in the vTPM at ``tcti`` and certified by the
    test platform CA, and that CA as the platform roots. The event log (``eventlog.bin``) is
    the caller's: it measures the boot it wants. ``overrides`` replace configuration keys.
    """
    require_cryptsetup()
    with (directory / "disk.img").open("wb") as handle:
        handle.truncate(DISK_SIZE)
    write_metadata_file(
        directory / "metadata.json",
        InstanceMetadata(
            name=name,
            role=role,
            private_ip="127.0.0.1",
            init_secret_hash=hash_init_secret(InitSecret(INIT_SECRET), cost=4),
            control_plane_endpoints=(),
        ),
    )
    (directory / "joinservice-measurements.json").write_text(
        Measurements({4: Measurement(b"\x04" * 32)}).to_json()
    )
    ca = cached_platform_ca()
    (directory / "ak-cert.der").write_bytes(provision_node(tcti, ca, name, role))
    (directory / "platform-roots.pem").write_bytes(ca.cert_pem)
    config: dict[str, object] = {
        "metadata_path": str(directory / "metadata.json"),
        "state_disk_path": str(directory / "disk.img"),
        "state_dir": str(directory / "state"),
        "install_root": str(directory / "root"),
        "tpm_tcti": tcti,
        "init_port": port,
        "join_measurements_path": str(directory / "joinservice-measurements.json"),
        "event_log_path": str(directory / "eventlog.bin"),
        "ak_certificate_path": str(directory / "ak-cert.der"),
        "platform_roots_path": str(directory / "platform-roots.pem"),
        "join_retry": {"initial_delay_s": 0.1, "max_delay_s": 0.5, "max_attempts": 3},
        "fast_luks_pbkdf": True,
    }
    config.update(overrides)
    return config


def processes_mentioning(text: str) -> list[int]:
    """PIDs of live (non-zombie) processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            status = (entry / "status").read_text()
        except OSError:
            continue
        if text in cmdline and "State:\tZ" not in status:
            found.append(int(entry.name))
    return found
