"""Test harness of a real node for bootstrapper tests: swtpm, LUKS2 header, aTLS init server.

Used by the tests of the bootstrapper (and the e2e suite): they import :func:`make_node` and
:func:`serve_init` so each test builds exactly the node it needs. Everything is real: the
node's vTPM is a swtpm, the state disk a LUKS2 header driven by cryptsetup, the init server is
served over aTLS where the node attests and the client verifies it.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from constellation.attestation import atls
from constellation.attestation.measurements import Measurement, Measurements
from constellation.attestation.nodelock import NodeLock
from constellation.attestation.swtpm import Swtpm
from constellation.attestation.vtpm import VtpmIssuer, VtpmValidator
from constellation.bootstrapper.initsecret import InitSecret, hash_init_secret
from constellation.bootstrapper.initserver import (
    ControlPlaneStarter,
    InitCallbacks,
    InitServer,
)
from constellation.bootstrapper.installer import ComponentInstaller
from constellation.bootstrapper.metadata import (
    Endpoint,
    FileMetadata,
    InstanceMetadata,
    Role,
    write_metadata_file,
)
from constellation.bootstrapper.statedisk import FAST_PBKDF2, DiskKey, StateDisk
from constellation.proto import components_pb2, init_pb2, init_pb2_grpc

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
    tpm: Swtpm
    lock: NodeLock
    disk: StateDisk
    initial_key: DiskKey
    metadata: FileMetadata
    installer: ComponentInstaller

    @property
    def node_state_path(self) -> Path:
        return self.directory / "state" / "node-state.json"


def make_node(
    directory: Path,
    tpm: Swtpm,
    *,
    name: str = "node-0",
    role: Role = Role.CONTROL_PLANE,
    ip: str = "127.0.0.1",
    endpoints: tuple[Endpoint, ...] = (),
) -> NodeParts:
    require_cryptsetup()
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
        tpm=tpm,
        lock=NodeLock(tpm.tcti),
        disk=disk,
        initial_key=initial_key,
        metadata=FileMetadata(metadata_path),
        installer=ComponentInstaller(directory / "root", http_timeout_s=5, total_timeout_s=60),
    )


def uninitialized_node_validator() -> VtpmValidator:
    """What the CLI checks before sending Init: PCR 15 must still be zero (not yet locked)."""
    return VtpmValidator(Measurements({15: Measurement(expected=ZERO_PCR)}))


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
    server = atls.AttestedServer(VtpmIssuer(node.tpm.tcti))
    init_pb2_grpc.add_APIServicer_to_server(servicer, server.grpc_server)
    port = server.add_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None).wait(5)


def call_init(
    target: str, request: init_pb2.InitRequest, *, validator: VtpmValidator | None = None
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
