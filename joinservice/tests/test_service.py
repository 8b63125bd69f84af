"""The JoinService end to end: real swtpm nodes, a real KeyService, a real kube-apiserver.

Every test runs a JoinService on loopback, assembled exactly as the command assembles it
(``server.build_join_server``), with its own swtpm as the host's vTPM. Nodes are swtpm
instances measured from an image; they join over mutual aTLS with ``attestation.atls.connect``
and then prove what they got by authenticating to the API server with it.

A node's name and role come from its platform identity: the test platform CA
(``attestation.testing.platform``) certifies the node's AK as ``name``/``role`` the way a
cloud certifies the vTPM of a VM it creates, and the service's validator trusts that CA.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog.testing
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes import client as k8s

from constellation.attestation.atls import connect
from constellation.attestation.identity import Role
from constellation.attestation.kdf import derive_cluster_id, derive_key
from constellation.attestation.measurements import Measurements
from constellation.attestation.nodelock import NodeLock
from constellation.attestation.service import ServiceMetrics
from constellation.attestation.testing.platform import (
    cached_platform_ca,
    node_issuer,
    node_validator,
    provision_node,
)
from constellation.attestation.vtpm import VtpmIssuer, VtpmValidator
from constellation.cli.servicepki import TLSBundle, issue_service_pki
from constellation.joinservice.__main__ import validator_for
from constellation.joinservice.config import Settings
from constellation.joinservice.joinconfig import (
    MEASUREMENTS_FILE,
    PLATFORM_ROOTS_FILE,
    SALT_FILE,
    VARIANT_FILE,
    JoinConfigWatcher,
)
from constellation.joinservice.keys import KeyServiceTLS, keyservice_channel
from constellation.joinservice.kubernetes import BINDING_PREFIX, NODE_NAME_PREFIX
from constellation.joinservice.server import METRICS_SERVICE, JoinServer, build_join_server
from constellation.keyservice.keys import DataKeys, MasterSecret
from constellation.keyservice.server import KeyServiceServer
from constellation.keyservice.tls import load_server_tls
from constellation.proto import join_pb2, join_pb2_grpc

from .conftest import IMAGE, Node, image_measurements, write_mount

pytestmark = [pytest.mark.kube, pytest.mark.swtpm, pytest.mark.slow]

TAMPERED = (IMAGE[0], b"tampered initrd", IMAGE[2])
NAMESPACE = "kube-system"


@dataclass
class KeyService:
    target: str
    secret: MasterSecret
    server: KeyServiceServer
    client: TLSBundle  # the JoinService's side of the KeyService's mutual TLS

    def client_tls(self) -> KeyServiceTLS:
        return KeyServiceTLS.load(self.client.ca_pem, self.client.cert_pem, self.client.key_pem)

    def data_key(self, data_key_id: str) -> bytes:
        return derive_key(self.secret.key, self.secret.salt, "key-" + data_key_id, 32)


@pytest.fixture
def keyservice() -> Iterator[KeyService]:
    secret = MasterSecret(key=os.urandom(32), salt=os.urandom(32))
    pki = issue_service_pki()
    tls = pki.keyservice_server
    server = KeyServiceServer(
        DataKeys(secret),
        ServiceMetrics("keyservice"),
        load_server_tls(tls.cert_pem, tls.key_pem, tls.ca_pem),
    )
    port = server.add_port("127.0.0.1:0")
    server.start()
    try:
        yield KeyService(f"127.0.0.1:{port}", secret, server, pki.joinservice_client)
    finally:
        server.grpc_server.stop(None).wait(5)


def join_config_files(measurements: Measurements, salt: bytes) -> dict[str, bytes]:
    return {
        VARIANT_FILE: b"qemu-vtpm",
        MEASUREMENTS_FILE: measurements.to_json().encode(),
        SALT_FILE: salt,
        PLATFORM_ROOTS_FILE: cached_platform_ca().cert_pem,
    }


def certified(node: Node, name: str, role: Role = Role.WORKER) -> VtpmIssuer:
    """The node's issuer, its AK certified by the test platform as ``name`` in ``role``."""
    return node_issuer(node.tpm.tcti, name, role, event_log=node.event_log)


def server_validator(host: Node) -> VtpmValidator:
    """What a joining node trusts: the image measurements of the JoinService's host."""
    return node_validator(image_measurements(host), require_event_log=True)


def stub_call(target: str, host: Node, issuer: VtpmIssuer, method: str, request: Any) -> Any:
    with connect(target, [server_validator(host)], issuer=issuer) as channel:
        return getattr(join_pb2_grpc.APIStub(channel.channel), method)(request, timeout=60)


def join_via(
    target: str,
    host: Node,
    node: Node,
    disk_uuid: str,
    name: str,
    *,
    control_plane: bool = False,
    csr_name: str | None = None,
    role: Role | None = None,
) -> tuple[join_pb2.IssueJoinTicketResponse, ec.EllipticCurvePrivateKey]:
    """Join as the platform's ``name`` (role from ``control_plane`` unless given), asking for
    a kubelet certificate for ``csr_name`` (default: ``name``)."""
    if role is None:
        role = Role.CONTROL_PLANE if control_plane else Role.WORKER
    key, csr = kubelet_csr(csr_name or name)
    request = join_pb2.IssueJoinTicketRequest(
        disk_uuid=disk_uuid, certificate_request=csr, is_control_plane=control_plane
    )
    issuer = certified(node, name, role)
    return stub_call(target, host, issuer, "IssueJoinTicket", request), key


@dataclass
class Service:
    """A running JoinService and what a node needs to talk to it."""

    target: str
    server: JoinServer
    watcher: JoinConfigWatcher[Any]
    metrics: ServiceMetrics
    host: Node
    join_config_dir: Path
    salt: bytes
    keyservice: KeyService

    def server_validator(self) -> VtpmValidator:
        return server_validator(self.host)

    def stub_call(self, issuer: VtpmIssuer, method: str, request: Any) -> Any:
        return stub_call(self.target, self.host, issuer, method, request)

    def join(
        self,
        node: Node,
        disk_uuid: str,
        name: str,
        *,
        control_plane: bool = False,
        csr_name: str | None = None,
        role: Role | None = None,
    ) -> tuple[join_pb2.IssueJoinTicketResponse, ec.EllipticCurvePrivateKey]:
        return join_via(
            self.target,
            self.host,
            node,
            disk_uuid,
            name,
            control_plane=control_plane,
            csr_name=csr_name,
            role=role,
        )

    def rejoin(
        self, node: Node, disk_uuid: str, name: str, role: Role = Role.WORKER
    ) -> join_pb2.IssueRejoinTicketResponse:
        request = join_pb2.IssueRejoinTicketRequest(disk_uuid=disk_uuid)
        return self.stub_call(certified(node, name, role), "IssueRejoinTicket", request)


@pytest.fixture
def start_service(
    control_plane: Any,
    kube_client: Any,
    keyservice: KeyService,
    make_nodes: Callable[..., list[Node]],
    tmp_path: Path,
) -> Iterator[Callable[..., Service]]:
    started: list[Service] = []

    def start(measurements: Measurements | None = None, poll_interval: float = 0.1) -> Service:
        (host,) = make_nodes(1)
        directory = tmp_path / f"join-config-{len(started)}"
        directory.mkdir()
        salt = os.urandom(32)
        write_mount(
            directory, "1", join_config_files(measurements or image_measurements(host), salt)
        )
        components = tmp_path / "components.json"
        components.write_text(
            json.dumps(
                {
                    "kubernetesVersion": "v1.31.1",
                    "components": [
                        {
                            "name": "kubelet",
                            "url": "file:///opt/kubelet",
                            "hash": "sha256:" + "ab" * 32,
                            "installPath": "/usr/bin/kubelet",
                            "extract": False,
                        }
                    ],
                }
            )
        )
        settings = Settings.create(
            listen_host="127.0.0.1",
            port=0,
            metrics_port=None,
            join_config_dir=directory,
            poll_interval=poll_interval,
            keyservice_endpoint=keyservice.target,
            kubeconfig=control_plane.admin_kubeconfig,
            ca_cert_file=control_plane.ca_cert_path,
            ca_key_file=control_plane.ca_key_path,
            pki_dir=control_plane.pki_dir,
            api_server_endpoint=control_plane.server.removeprefix("https://"),
            components_file=components,
            tpm_tcti=host.tpm.tcti,
        )
        metrics = ServiceMetrics(METRICS_SERVICE)
        channel = keyservice_channel(keyservice.target, keyservice.client_tls())
        server, watcher = build_join_server(
            settings,
            issuer=certified(host, "joinservice-host", Role.CONTROL_PLANE),
            validator_factory=validator_for,
            core=k8s.CoreV1Api(kube_client),
            keyservice=channel,
            metrics=metrics,
        )
        port = server.add_port("127.0.0.1:0")
        server.start()
        watcher.start()
        service = Service(
            f"127.0.0.1:{port}", server, watcher, metrics, host, directory, salt, keyservice
        )
        started.append(service)
        return service

    try:
        yield start
    finally:
        for service in started:
            service.watcher.stop()
            service.server.shutdown(grace=1.0)


def kubelet_csr(name: str) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                    x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{name}"),
                ]
            )
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.PEM)


def whoami(
    control_plane: Any,
    tmp_path: Path,
    *,
    token: str | None = None,
    cert_pem: bytes | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> tuple[str, list[str]]:
    """Who the API server says the credential is (SelfSubjectReview)."""
    configuration = k8s.Configuration()
    configuration.host = control_plane.server
    configuration.ssl_ca_cert = str(control_plane.ca_cert_path)
    if token is not None:
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
    else:
        assert cert_pem is not None
        assert key is not None
        stem = tmp_path / uuid.uuid4().hex
        cert_file, key_file = stem.with_suffix(".crt"), stem.with_suffix(".key")
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        configuration.cert_file, configuration.key_file = str(cert_file), str(key_file)
    with k8s.ApiClient(configuration) as api:
        review = k8s.AuthenticationV1Api(api).create_self_subject_review(
            k8s.V1SelfSubjectReview(), _request_timeout=10
        )
    info = review.status.user_info
    return info.username, list(info.groups or [])


def refusals(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry.get("event") == "join.refused"]


def checks_of(entry: dict[str, Any]) -> set[str]:
    return {failure["check"] for failure in entry.get("failures", [])}


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# --------------------------------------------------------------------------------------------


def test_ten_nodes_join_concurrently(
    start_service: Callable[..., Service],
    make_nodes: Callable[..., list[Node]],
    control_plane: Any,
    tmp_path: Path,
) -> None:
    service = start_service()
    nodes = make_nodes(10)
    disks = [str(uuid.uuid4()).upper() for _ in nodes]
    names = [f"worker-{uuid.uuid4().hex[:8]}" for _ in nodes]
    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(service.join, nodes, disks, names))

    ca_pem = control_plane.ca_cert_path.read_bytes()
    ca_spki = (
        x509.load_pem_x509_certificate(ca_pem)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    measurement_secret = service.keyservice.data_key("measurementSecret")
    tokens = set()
    for (response, key), disk, name in zip(results, disks, names, strict=True):
        assert response.state_disk_key == service.keyservice.data_key(disk.lower())
        assert response.measurement_secret == measurement_secret
        assert response.measurement_salt == service.salt
        assert response.ca_cert == ca_pem
        assert (
            response.discovery_token_ca_cert_hash == "sha256:" + hashlib.sha256(ca_spki).hexdigest()
        )
        assert response.api_server_endpoint == control_plane.server.removeprefix("https://")
        assert response.kubernetes_version == "v1.31.1"
        assert [c.name for c in response.kubernetes_components] == ["kubelet"]
        assert list(response.control_plane_files) == []
        token_id = response.token.split(".")[0]
        tokens.add(response.token)
        user, groups = whoami(control_plane, tmp_path, token=response.token)
        assert user == f"system:bootstrap:{token_id}"
        assert "system:bootstrappers" in groups
        user, groups = whoami(control_plane, tmp_path, cert_pem=response.kubelet_cert, key=key)
        assert user == f"system:node:{name}"
        assert "system:nodes" in groups
    assert len(tokens) == 10
    assert service.metrics.requests("/join.API/IssueJoinTicket", "OK") == 10


def test_no_secret_reaches_the_log(
    start_service: Callable[..., Service], make_nodes: Callable[..., list[Node]]
) -> None:
    service = start_service()
    (node,) = make_nodes(1)
    disk = str(uuid.uuid4())
    with structlog.testing.capture_logs() as logs:
        response, _ = service.join(node, disk, "quiet", control_plane=True)
    (issued,) = [entry for entry in logs if entry["event"] == "join.issued"]
    assert issued["peer"] == issued["peer"].lower()
    assert len(issued["peer"]) == 64
    assert issued["node"] == "quiet"
    assert issued["token_id"] == response.token.split(".")[0]
    dump = json.dumps(logs, default=repr)
    secret_half = response.token.split(".")[1]
    for value in (
        secret_half,
        response.state_disk_key.hex(),
        response.measurement_secret.hex(),
        repr(response.state_disk_key)[2:-1],
    ):
        assert value not in dump
    ca_key = {f.name: f.data for f in response.control_plane_files}["ca.key"]
    assert ca_key.decode().splitlines()[1] not in dump


def test_keyservice_outage_is_unavailable(
    start_service: Callable[..., Service],
    make_nodes: Callable[..., list[Node]],
    keyservice: KeyService,
    kube_client: Any,
) -> None:
    service = start_service()
    (node,) = make_nodes(1)
    core = k8s.CoreV1Api(kube_client)

    def tokens() -> set[str]:
        listed = core.list_namespaced_secret(
            NAMESPACE, field_selector="type=bootstrap.kubernetes.io/token"
        )
        return {item.metadata.name for item in listed.items}

    before = tokens()
    keyservice.server.grpc_server.stop(None).wait(5)
    with pytest.raises(grpc.RpcError) as info:
        service.join(node, str(uuid.uuid4()), "no-keys")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "KeyService" in info.value.details()
    assert service.metrics.requests("/join.API/IssueJoinTicket", "UNAVAILABLE") == 1
    # The bootstrap token is created last, so a failed join leaves none behind.
    assert tokens() == before


def test_control_plane_node_gets_the_pki(
    start_service: Callable[..., Service], make_nodes: Callable[..., list[Node]], control_plane: Any
) -> None:
    service = start_service()
    (node,) = make_nodes(1)
    response, _ = service.join(node, str(uuid.uuid4()), "cp-1", control_plane=True)
    files = {f.name: f.data for f in response.control_plane_files}
    assert files["ca.key"] == control_plane.ca_key_path.read_bytes()
    assert {"ca.crt", "sa.key", "sa.pub", "etcd/ca.key", "front-proxy-ca.key"} <= set(files)


def test_node_with_wrong_pcr_is_refused_and_logged(
    start_service: Callable[..., Service], make_nodes: Callable[..., list[Node]]
) -> None:
    service = start_service()
    (tampered,) = make_nodes(1, TAMPERED)
    disk = str(uuid.uuid4())
    with structlog.testing.capture_logs() as logs, pytest.raises(grpc.RpcError) as info:
        service.join(tampered, disk, "tampered")
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "pcr[9]" in info.value.details()
    (refusal,) = refusals(logs)
    assert checks_of(refusal) == {"pcr[9]"}
    assert refusal["stage"] == "attestation"
    assert refusal["outcome"] == "refused"
    assert refusal["variant"] == "qemu-vtpm"
    failure = refusal["failures"][0]
    assert failure["expected"] == image_measurements(service.host)[9].expected.hex()


def test_node_with_pcr15_set_is_refused_for_join(
    start_service: Callable[..., Service], make_nodes: Callable[..., list[Node]]
) -> None:
    service = start_service()
    (node,) = make_nodes(1)
    secret = service.keyservice.data_key("measurementSecret")
    assert NodeLock(node.tpm.tcti).try_lock(derive_cluster_id(secret, service.salt))
    with structlog.testing.capture_logs() as logs, pytest.raises(grpc.RpcError) as info:
        service.join(node, str(uuid.uuid4()), "already-locked")
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    (refusal,) = refusals(logs)
    assert checks_of(refusal) == {"node_state", "pcr[15]"}
    assert refusal["peer"]  # the node attested; its identity is in the log
    dump = json.dumps(logs, default=str)
    assert secret.hex() not in dump


def test_node_locked_to_another_cluster_is_refused(
    start_service: Callable[..., Service], make_nodes: Callable[..., list[Node]]
) -> None:
    service = start_service()
    (node,) = make_nodes(1)
    assert NodeLock(node.tpm.tcti).try_lock(os.urandom(32))
    for call in (service.join, service.rejoin):
        with pytest.raises(grpc.RpcError) as info:
            call(node, str(uuid.uuid4()), "foreign")
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "pcr[15]" in info.value.details()


def test_rejoin_returns_the_same_disk_key(
    start_service: Callable[..., Service], make_nodes: Callable[..., list[Node]]
) -> None:
    service = start_service()
    (node,) = make_nodes(1)
    disk = str(uuid.uuid4())
    joined, _ = service.join(node, disk, "rejoiner")
    # A fresh node may not ask for a rejoin ticket: its PCR 15 is still zero.
    with pytest.raises(grpc.RpcError) as info:
        service.rejoin(node, disk, "rejoiner")
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # The node takes its node lock with the cluster ID it derived, reboots, asks again.
    cluster_id = derive_cluster_id(joined.measurement_secret, joined.measurement_salt)
    assert NodeLock(node.tpm.tcti).try_lock(cluster_id)
    rejoined = service.rejoin(node, disk.upper(), "rejoiner")
    assert rejoined.state_disk_key == joined.state_disk_key
    assert rejoined.measurement_secret == joined.measurement_secret


def test_disk_bound_to_one_node_is_refused_to_another(
    start_service: Callable[..., Service], make_nodes: Callable[..., list[Node]], kube_client: Any
) -> None:
    service = start_service()
    node_a, node_b = make_nodes(2)
    disk = str(uuid.uuid4())
    joined, _ = service.join(node_a, disk, "node-a")
    with structlog.testing.capture_logs() as logs, pytest.raises(grpc.RpcError) as info:
        service.join(node_b, disk, "node-b")
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    (refusal,) = refusals(logs)
    assert checks_of(refusal) == {"disk.bound_elsewhere"}
    assert refusal["outcome"] == "refused"
    assert refusal["error"] == "DiskBindingError"
    # Node A itself may ask again (a retried join is not a second machine).
    again, _ = service.join(node_a, disk, "node-a")
    assert again.state_disk_key == joined.state_disk_key
    # Rejoin is bound the same way.
    cluster_id = derive_cluster_id(joined.measurement_secret, joined.measurement_salt)
    assert NodeLock(node_b.tpm.tcti).try_lock(cluster_id)
    with pytest.raises(grpc.RpcError) as info:
        service.rejoin(node_b, disk, "node-b")
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # The binding is an immutable object in the cluster, not process memory.
    binding = k8s.CoreV1Api(kube_client).read_namespaced_config_map(
        BINDING_PREFIX + disk, NAMESPACE
    )
    assert binding.immutable is True


def config_map_exists(kube_client: Any, name: str) -> bool:
    try:
        k8s.CoreV1Api(kube_client).read_namespaced_config_map(name, NAMESPACE)
    except k8s.ApiException as err:
        if err.status == 404:
            return False
        raise
    return True


def test_kubelet_cert_only_for_the_attested_name(
    start_service: Callable[..., Service], make_nodes: Callable[..., list[Node]], kube_client: Any
) -> None:
    """A machine certified as one node cannot get a certificate for another node's name."""
    service = start_service()
    (node,) = make_nodes(1)
    own, victim = f"worker-{uuid.uuid4().hex[:8]}", f"cp-{uuid.uuid4().hex[:8]}"
    disk = str(uuid.uuid4())
    with structlog.testing.capture_logs() as logs, pytest.raises(grpc.RpcError) as info:
        service.join(node, disk, own, csr_name=victim)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "csr.node_name" in info.value.details()
    (refusal,) = refusals(logs)
    assert checks_of(refusal) == {"csr.node_name"}
    assert refusal["node"] == own
    assert not config_map_exists(kube_client, NODE_NAME_PREFIX + victim)
    assert not config_map_exists(kube_client, BINDING_PREFIX + disk)


def test_control_plane_files_only_for_a_control_plane_identity(
    start_service: Callable[..., Service], make_nodes: Callable[..., list[Node]]
) -> None:
    service = start_service()
    (node,) = make_nodes(1)
    with structlog.testing.capture_logs() as logs, pytest.raises(grpc.RpcError) as info:
        service.join(node, str(uuid.uuid4()), "eager-worker", control_plane=True, role=Role.WORKER)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    (refusal,) = refusals(logs)
    assert checks_of(refusal) == {"identity.role"}
    assert refusal["role"] == "worker"


def test_a_name_belongs_to_the_machine_that_joined_first(
    start_service: Callable[..., Service], make_nodes: Callable[..., list[Node]], kube_client: Any
) -> None:
    service = start_service()
    first, second = make_nodes(2)
    name = f"worker-{uuid.uuid4().hex[:8]}"
    service.join(first, str(uuid.uuid4()), name)
    # The platform certifies a second machine under the same name: still refused.
    with structlog.testing.capture_logs() as logs, pytest.raises(grpc.RpcError) as info:
        service.join(second, str(uuid.uuid4()), name)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    (refusal,) = refusals(logs)
    assert checks_of(refusal) == {"node.name_taken"}
    assert refusal["error"] == "NodeNameTakenError"
    record = k8s.CoreV1Api(kube_client).read_namespaced_config_map(
        NODE_NAME_PREFIX + name, NAMESPACE
    )
    assert record.immutable is True


def test_rejoin_never_binds_a_new_disk(
    start_service: Callable[..., Service], make_nodes: Callable[..., list[Node]], kube_client: Any
) -> None:
    """A member's rejoin for a disk UUID no join bound gets nothing and binds nothing."""
    service = start_service()
    (node,) = make_nodes(1)
    joined, _ = service.join(node, str(uuid.uuid4()), "member")
    cluster_id = derive_cluster_id(joined.measurement_secret, joined.measurement_salt)
    assert NodeLock(node.tpm.tcti).try_lock(cluster_id)
    stranger = str(uuid.uuid4())
    with structlog.testing.capture_logs() as logs, pytest.raises(grpc.RpcError) as info:
        service.rejoin(node, stranger, "member")
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    (refusal,) = refusals(logs)
    assert checks_of(refusal) == {"disk.unknown"}
    assert not config_map_exists(kube_client, BINDING_PREFIX + stranger)


def test_one_attestation_buys_one_ticket(
    start_service: Callable[..., Service], make_nodes: Callable[..., list[Node]]
) -> None:
    """Calls over one attested connection share one attestation: the second ticket waits
    for a fresh one."""
    service = start_service()
    (node,) = make_nodes(1)
    disk = str(uuid.uuid4())
    issuer = certified(node, "thrifty")
    with connect(service.target, [service.server_validator()], issuer=issuer) as channel:
        stub = join_pb2_grpc.APIStub(channel.channel)
        _, csr = kubelet_csr("thrifty")
        request = join_pb2.IssueJoinTicketRequest(disk_uuid=disk, certificate_request=csr)
        assert stub.IssueJoinTicket(request, timeout=60).token
        with pytest.raises(grpc.RpcError) as info:
            stub.IssueJoinTicket(request, timeout=60)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "attestation.spent" in info.value.details()
    assert "attest again" in info.value.details()
    response, _ = service.join(node, disk, "thrifty")  # a new connection attests afresh
    assert response.token


def test_fresh_attestations_are_rate_limited_per_identity(
    start_service: Callable[..., Service], make_nodes: Callable[..., list[Node]]
) -> None:
    service = start_service()
    busy, other = make_nodes(2)
    disk = str(uuid.uuid4())
    for _ in range(3):
        service.join(busy, disk, "busy")
    with structlog.testing.capture_logs() as logs, pytest.raises(grpc.RpcError) as info:
        service.join(busy, disk, "busy")
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "retry in" in info.value.details()
    (refusal,) = refusals(logs)
    assert refusal["outcome"] == "limited"
    assert checks_of(refusal) == {"rate.identity"}
    response, _ = service.join(other, str(uuid.uuid4()), "other")
    assert response.token
    assert service.metrics.requests("/join.API/IssueJoinTicket", "RESOURCE_EXHAUSTED") == 1


def test_bad_requests_are_invalid_argument_and_create_nothing(
    start_service: Callable[..., Service], make_nodes: Callable[..., list[Node]], kube_client: Any
) -> None:
    service = start_service()
    (node,) = make_nodes(1)
    _, good_csr = kubelet_csr("fine")
    _, bad_csr = kubelet_csr("Not_A_DNS_Name")
    disk = str(uuid.uuid4())
    cases = [
        join_pb2.IssueJoinTicketRequest(disk_uuid="not-a-uuid", certificate_request=good_csr),
        join_pb2.IssueJoinTicketRequest(disk_uuid=disk, certificate_request=b""),
        join_pb2.IssueJoinTicketRequest(disk_uuid=disk, certificate_request=b"x" * 20000),
        join_pb2.IssueJoinTicketRequest(disk_uuid=disk, certificate_request=bad_csr),
    ]
    issuer = certified(node, "fine")
    for request in cases:
        with structlog.testing.capture_logs() as logs, pytest.raises(grpc.RpcError) as info:
            service.stub_call(issuer, "IssueJoinTicket", request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        (refusal,) = refusals(logs)
        assert refusal["outcome"] == "invalid"
    with pytest.raises(grpc.RpcError) as info:
        service.rejoin(node, "../etc", "fine")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(k8s.ApiException) as missing:
        k8s.CoreV1Api(kube_client).read_namespaced_config_map(BINDING_PREFIX + disk, NAMESPACE)
    assert missing.value.status == 404


def test_unattested_client_gets_health_but_no_ticket(
    start_service: Callable[..., Service],
) -> None:
    service = start_service()
    with connect(service.target, [service.server_validator()]) as channel:
        health = health_pb2_grpc.HealthStub(channel.channel)
        for name in ("", "join.API"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            join_pb2_grpc.APIStub(channel.channel).IssueRejoinTicket(
                join_pb2.IssueRejoinTicketRequest(disk_uuid=str(uuid.uuid4())), timeout=10
            )
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_new_measurements_take_effect_without_restart(
    start_service: Callable[..., Service], make_nodes: Callable[..., list[Node]]
) -> None:
    service = start_service()
    (upgraded,) = make_nodes(1, TAMPERED)  # stands for a node booted from a new image
    with pytest.raises(grpc.RpcError) as info:
        service.join(upgraded, str(uuid.uuid4()), "new-image-1")
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED

    before = service.watcher.current.config.digest
    write_mount(
        service.join_config_dir,
        "2",
        join_config_files(image_measurements(upgraded), service.salt),
    )
    assert wait_for(lambda: service.watcher.current.config.digest != before)
    response, _ = service.join(upgraded, str(uuid.uuid4()), "new-image-2")
    assert response.state_disk_key

    # A malformed change is refused; the validator in force stays, the reason is logged.
    in_force = service.watcher.current.config.digest
    with structlog.testing.capture_logs() as logs:
        write_mount(
            service.join_config_dir,
            "3",
            {
                VARIANT_FILE: b"qemu-vtpm",
                MEASUREMENTS_FILE: b'{"4": {"expected": "not hex"}}',
                SALT_FILE: service.salt,
            },
        )
        assert wait_for(lambda: any(e["event"] == "joinconfig.rejected" for e in logs))
    assert service.watcher.current.config.digest == in_force
    response, _ = service.join(upgraded, str(uuid.uuid4()), "new-image-3")
    assert response.state_disk_key
    # ... and an unknown variant is refused the same way.
    with structlog.testing.capture_logs() as logs:
        write_mount(
            service.join_config_dir,
            "4",
            {
                VARIANT_FILE: b"no-such-variant",
                MEASUREMENTS_FILE: image_measurements(upgraded).to_json().encode(),
                SALT_FILE: service.salt,
            },
        )
        assert wait_for(lambda: any(e["event"] == "joinconfig.rejected" for e in logs))
    assert service.watcher.current.config.variant == "qemu-vtpm"


def test_new_measurements_revoke_clients_verified_before(
    start_service: Callable[..., Service], make_nodes: Callable[..., list[Node]]
) -> None:
    """An open channel verified under the old join-config must not outlive an upgrade."""
    service = start_service()
    (old_image,) = make_nodes(1)
    (new_image,) = make_nodes(1, TAMPERED)
    issuer = certified(old_image, "before-upgrade")
    with connect(service.target, [service.server_validator()], issuer=issuer) as ch:
        stub = join_pb2_grpc.APIStub(ch.channel)
        _, csr = kubelet_csr("before-upgrade")
        ticket = stub.IssueJoinTicket(
            join_pb2.IssueJoinTicketRequest(disk_uuid=str(uuid.uuid4()), certificate_request=csr),
            timeout=60,
        )
        assert ticket.state_disk_key

        before = service.watcher.current.config.digest
        write_mount(
            service.join_config_dir,
            "2",
            join_config_files(image_measurements(new_image), service.salt),
        )
        assert wait_for(lambda: service.watcher.current.config.digest != before)
        # Same channel, same client certificate: the remembered verdict is gone, and the
        # evidence it carries (the old image) no longer satisfies the join-config.
        _, csr = kubelet_csr("before-upgrade")
        with pytest.raises(grpc.RpcError) as info:
            stub.IssueJoinTicket(
                join_pb2.IssueJoinTicketRequest(
                    disk_uuid=str(uuid.uuid4()), certificate_request=csr
                ),
                timeout=60,
            )
        assert info.value.code() in (
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.UNAUTHENTICATED,
        )
        # Refused for the old evidence, not merely because the attestation bought a ticket.
        assert "attestation.spent" not in (info.value.details() or "")


def test_certificate_validity_is_bounded(
    start_service: Callable[..., Service], make_nodes: Callable[..., list[Node]]
) -> None:
    service = start_service()
    (node,) = make_nodes(1)
    response, key = service.join(node, str(uuid.uuid4()), "validity")
    certificate = x509.load_pem_x509_certificate(response.kubelet_cert)
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifetime <= datetime.timedelta(days=366)
    assert certificate.public_key().public_numbers() == key.public_key().public_numbers()


def read_json_lines(stream: Any, into: queue.Queue[dict[str, Any]]) -> None:
    for line in stream:
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                into.put(json.loads(line))


def wait_for_event(
    lines: queue.Queue[dict[str, Any]], event: str, timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            entry = lines.get(timeout=left)
        except queue.Empty:
            break
        if entry.get("event") == event:
            return entry
    raise AssertionError(f"no {event!r} log line within {timeout}s")


def keyservice_client_files(keyservice: KeyService, directory: Path) -> dict[str, Path]:
    """The constellation-keyservice-client Secret as mounted: flag name -> file."""
    files = {}
    for flag, (name, data) in zip(
        ("ca", "cert", "key"), keyservice.client.secret_data().items(), strict=True
    ):
        files[flag] = directory / f"keyservice-client-{name}"
        files[flag].write_bytes(data)
    return files


def test_command_serves_and_drains_on_sigterm(
    control_plane: Any,
    keyservice: KeyService,
    make_nodes: Callable[..., list[Node]],
    tmp_path: Path,
) -> None:
    host, node = make_nodes(2)
    join_config = tmp_path / "join-config"
    join_config.mkdir()
    salt = os.urandom(32)
    write_mount(join_config, "1", join_config_files(image_measurements(host), salt))
    components = tmp_path / "components.json"
    components.write_text(json.dumps({"kubernetesVersion": "v1.31.1", "components": []}))
    event_log = tmp_path / "binary_bios_measurements"
    event_log.write_bytes(host.event_log)
    ak_certificate = tmp_path / "ak-cert.der"
    ak_certificate.write_bytes(
        provision_node(host.tpm.tcti, cached_platform_ca(), "control-plane-0", Role.CONTROL_PLANE)
    )
    command = [
        sys.executable,
        "-m",
        "constellation.joinservice",
        "--listen=127.0.0.1",
        "--port=0",
        "--health-port=0",
        "--metrics-port=0",
        f"--join-config-dir={join_config}",
        f"--keyservice-endpoint={keyservice.target}",
        *(
            f"--keyservice-{flag}-file={path}"
            for flag, path in keyservice_client_files(keyservice, tmp_path).items()
        ),
        f"--kubeconfig={control_plane.admin_kubeconfig}",
        f"--ca-cert-file={control_plane.ca_cert_path}",
        f"--ca-key-file={control_plane.ca_key_path}",
        f"--api-server-endpoint={control_plane.server.removeprefix('https://')}",
        f"--components-file={components}",
        f"--tpm-tcti={host.tpm.tcti}",
        f"--event-log={event_log}",
        f"--ak-certificate-file={ak_certificate}",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[dict[str, Any]] = queue.Queue()
    reader = threading.Thread(target=read_json_lines, args=(process.stderr, lines), daemon=True)
    reader.start()
    try:
        port = wait_for_event(lines, "joinservice.listening", 60)["port"]
        disk = str(uuid.uuid4())
        response, _ = join_via(f"127.0.0.1:{port}", host, node, disk, "from-the-command")
        assert response.state_disk_key == keyservice.data_key(disk)
        assert response.measurement_salt == salt
        issued = wait_for_event(lines, "join.issued", 10)
        assert issued["variant"] == "qemu-vtpm"
        assert response.token not in json.dumps(issued)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        wait_for_event(lines, "service.stopped", 5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


@pytest.mark.parametrize("method", ["IssueJoinTicket", "IssueRejoinTicket"])
def test_undecodable_request_is_invalid_argument(
    start_service: Callable[..., Service], make_nodes: Callable[..., list[Node]], method: str
) -> None:
    # Was INTERNAL ("Exception deserializing request!"), grpcio's own answer.
    service = start_service()
    (node,) = make_nodes(1)
    issuer = certified(node, "garbage-sender")
    with (
        connect(service.target, [service.server_validator()], issuer=issuer) as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        channel.channel.unary_unary(f"/join.API/{method}")(b"\x0a\x10truncated", timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert service.metrics.requests(f"/join.API/{method}", "INVALID_ARGUMENT") == 1
