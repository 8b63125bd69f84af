"""init.API over aTLS on a real node (swtpm vTPM, LUKS2 header via cryptsetup).

Negative paths run everywhere swtpm and cryptsetup exist; the happy path also needs the pinned
Kubernetes binaries (it brings up the real control plane) and is skipped without them.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
import time
from pathlib import Path

import grpc
import pytest

from constellation.attestation import atls
from constellation.attestation.kdf import derive_cluster_id, derive_key, derive_measurement_secret
from constellation.attestation.measurements import Measurement, Measurements, pcr15_for_cluster_id
from constellation.attestation.nodelock import NodeLock
from constellation.attestation.swtpm import Swtpm
from constellation.attestation.testing.platform import node_validator
from constellation.attestation.vtpm import open_tpm, read_pcrs
from constellation.bootstrapper.initserver import InitCallbacks, InitOutcome, LocalControlPlane
from constellation.bootstrapper.nodestate import load_node_state
from constellation.bootstrapper.statedisk import DiskKey
from constellation.bootstrapper.testing import (
    NodeParts,
    call_init,
    component_for,
    init_request,
    make_node,
    serve_init,
    uninitialized_node_validator,
)
from constellation.proto import components_pb2, init_pb2, init_pb2_grpc

pytestmark = pytest.mark.swtpm


def _pcr15(tcti: str) -> bytes:
    with open_tpm(tcti) as esapi:
        _, values = read_pcrs(esapi, (15,))
    return values[15]


@pytest.fixture
def node(tmp_path: Path, swtpm: Swtpm) -> NodeParts:
    return make_node(tmp_path / "node", swtpm)


@pytest.fixture
def small_components(tmp_path: Path) -> list:
    tool = tmp_path / "artifacts" / "kubeadm"
    tool.parent.mkdir()
    tool.write_bytes(b"#!/bin/sh\nexit 0\n")
    return [component_for("kubeadm", tool, "/usr/bin/kubeadm")]


def _assert_untouched(node: NodeParts) -> None:
    """The node is exactly as before Init: lock free, disk on its initial key, nothing installed."""
    assert _pcr15(node.tpm.tcti) == bytes(32)
    assert not node.lock.is_initialized()
    node.disk.check_key(node.initial_key)
    assert not node.node_state_path.exists()
    root = node.installer.install_root
    assert not root.exists() or list(root.iterdir()) == []


def _not_called(parameters: object) -> bytes:
    raise AssertionError("the control plane must not be started on this path")


@pytest.mark.parametrize(
    "secret", [b"wrong secret, wrong secret......", b"", b"x" * 100], ids=["wrong", "empty", "long"]
)
def test_wrong_init_secret_is_denied_with_no_progress(
    node: NodeParts, small_components: list, secret: bytes
) -> None:
    with serve_init(node, _not_called) as target, pytest.raises(grpc.RpcError) as info:
        call_init(target, init_request(small_components, secret=secret))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert info.value.received == []  # no progress, no logs: nothing at all
    assert "secret" not in info.value.details().replace("init secret", "")
    _assert_untouched(node)


def _mutate(request: init_pb2.InitRequest, field: str, value: object) -> init_pb2.InitRequest:
    if field == "apiserver_cert_sans":
        request.apiserver_cert_sans.append(value)  # type: ignore[arg-type]
    elif field == "component_path":
        request.kubernetes_components[0].install_path = value  # type: ignore[assignment]
    else:
        setattr(request, field, value)
    return request


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("master_secret", b"short", "master_secret"),
        ("master_salt", b"s" * 31, "master_salt"),
        ("measurement_salt", b"", "measurement_salt"),
        ("kubernetes_version", "latest", "kubernetes_version"),
        ("cluster_name", "Not_A_Name", "cluster_name"),
        ("service_cidr", "10.0.0.0/99", "service_cidr"),
        ("apiserver_cert_sans", "bad name with spaces", "apiserver_cert_sans"),
        ("component_path", "../escape", "install path"),
    ],
)
def test_invalid_request_is_refused_before_the_lock(
    node: NodeParts, small_components: list, field: str, value: object, message: str
) -> None:
    request = _mutate(init_request(small_components), field, value)
    with serve_init(node, _not_called) as target, pytest.raises(grpc.RpcError) as info:
        call_init(target, request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.details()
    _assert_untouched(node)


def test_component_with_wrong_hash_aborts_init_before_the_lock(
    node: NodeParts, small_components: list, tmp_path: Path
) -> None:
    other = tmp_path / "artifacts" / "kubectl"
    other.write_bytes(b"#!/bin/sh\necho tampered\n")
    bad = component_for("kubectl", other, "/usr/bin/kubectl")
    other.write_bytes(b"#!/bin/sh\necho tampered after the CLI hashed it\n")
    with serve_init(node, _not_called) as target, pytest.raises(grpc.RpcError) as info:
        call_init(target, init_request([*small_components, bad]))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "kubectl" in info.value.details()
    assert "does not match the pinned SHA-256" in info.value.details()
    phases = [r.progress.phase for r in info.value.received]
    assert "node-lock" not in phases
    _assert_untouched(node)


def test_init_after_the_join_client_took_the_lock_is_refused(
    node: NodeParts, small_components: list
) -> None:
    # The join client committed first: same node, same lock object, another cluster.
    assert node.lock.try_lock(b"cluster-the-node-joined".ljust(32, b"\0"))
    marked = _pcr15(node.tpm.tcti)
    accept_any_pcr15 = node_validator(Measurements({15: Measurement(bytes(32), warn_only=True)}))
    with serve_init(node, _not_called) as target, pytest.raises(grpc.RpcError) as info:
        call_init(target, init_request(small_components), validator=accept_any_pcr15)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.received == []
    assert _pcr15(node.tpm.tcti) == marked  # no second mark
    node.disk.check_key(node.initial_key)  # the disk was not rekeyed by Init


def test_lock_taken_between_checks_is_detected_by_try_lock(
    node: NodeParts, small_components: list
) -> None:
    """A lock taken by another process (another NodeLock on the same TPM) also refuses Init."""
    other_process_lock = NodeLock(node.tpm.tcti)
    assert other_process_lock.try_lock(b"x" * 32)
    assert not node.lock.try_lock(b"y" * 32)


@pytest.mark.kube
@pytest.mark.slow
def test_init_happy_path_brings_up_the_control_plane(
    node: NodeParts,
    kubernetes_components,
    kubernetes_lock,
    tmp_path: Path,
) -> None:
    components = [
        component_for(name, kubernetes_components.path(name), f"/usr/local/bin/{name}")
        for name in ("kubeadm", "etcd", "kube-apiserver", "kube-controller-manager")
    ]
    request = init_request(components)
    request.kubernetes_version = kubernetes_lock.kubernetes_version
    outcomes: list[InitOutcome] = []
    plane = LocalControlPlane(tmp_path / "controlplane")
    try:
        with serve_init(node, plane, InitCallbacks(on_initialized=outcomes.append)) as target:
            responses = call_init(target, request)
    finally:
        plane.stop()

    *progress, last = responses
    phases = [r.progress.phase for r in progress]
    assert all(r.WhichOneof("kind") == "progress" for r in progress)
    for phase in (
        "validate",
        "derive",
        "components.verify",
        "node-lock",
        "state-disk",
        "components.install",
        "control-plane",
    ):
        assert phase in phases
    assert (
        phases.index("components.verify")
        < phases.index("node-lock")
        < phases.index("components.install")
    )
    assert last.WhichOneof("kind") == "init_success"
    success = last.init_success

    measurement_secret = derive_measurement_secret(request.master_secret, request.master_salt)
    cluster_id = derive_cluster_id(measurement_secret, request.measurement_salt)
    assert success.cluster_id == cluster_id
    assert len(success.owner_id) == 32
    assert success.owner_id != cluster_id
    assert _pcr15(node.tpm.tcti) == pcr15_for_cluster_id(cluster_id)

    uuid = node.disk.uuid()
    disk_key = derive_key(request.master_secret, request.master_salt, "key-" + uuid.lower(), 32)
    node.disk.check_key(DiskKey(disk_key))
    assert not node.disk.key_matches(node.initial_key)

    assert b"server: https://127.0.0.1:" in success.kubeconfig
    state = load_node_state(node.node_state_path)
    assert state.cluster_id == cluster_id
    assert state.disk_uuid == uuid
    assert os.stat(node.node_state_path).st_mode & 0o777 == 0o600
    installed = node.installer.install_root / "usr/local/bin/kube-apiserver"
    assert installed.stat().st_mode & 0o777 == 0o755
    assert [o.cluster_id for o in outcomes] == [cluster_id]


def test_unreadable_metadata_reveals_nothing_to_the_caller(
    node: NodeParts, small_components: list
) -> None:
    node.metadata.path.unlink()
    with serve_init(node, _not_called) as target, pytest.raises(grpc.RpcError) as info:
        call_init(target, init_request(small_components))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.details() == "this node cannot check init secrets"
    assert info.value.received == []
    _assert_untouched(node)


def test_init_completes_when_the_caller_disconnects_after_the_lock(
    node: NodeParts, small_components: list
) -> None:
    """Past the point of no return the node finishes on its own (here: up to the control
    plane, which fails for lack of binaries and is reported through the callback)."""
    failed: list[str] = []
    done = threading.Event()

    def on_failed(reason: str) -> None:
        failed.append(reason)
        done.set()

    request = init_request(small_components)
    callbacks = InitCallbacks(on_failed=on_failed)
    with serve_init(node, LocalControlPlane(node.directory / "cp"), callbacks) as target:
        with atls.connect(target, [uninitialized_node_validator()], timeout=30) as channel:
            stream = init_pb2_grpc.APIStub(channel.channel).Init(request, timeout=60)
            for response in stream:
                if response.progress.phase == "node-lock":
                    stream.cancel()
                    break
        assert done.wait(60)
    assert "lacks" in failed[0]
    uuid = node.disk.uuid()
    key = derive_key(request.master_secret, request.master_salt, "key-" + uuid, 32)
    node.disk.check_key(DiskKey(key))  # the rekey ran after the caller had gone
    assert (node.installer.install_root / "usr/bin/kubeadm").exists()


def test_second_concurrent_init_is_aborted(node: NodeParts, tmp_path: Path) -> None:
    """While one Init fetches its components, another (authorized) Init gets ABORTED."""
    release = threading.Event()
    payload = b"#!/bin/sh\nexit 0\n"

    class SlowHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            release.wait(30)
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    component = components_pb2.Component(
        name="kubeadm",
        url=f"http://127.0.0.1:{server.server_address[1]}/kubeadm",
        hash="sha256:" + hashlib.sha256(payload).hexdigest(),
        install_path="/usr/bin/kubeadm",
    )
    first: list[object] = []
    try:
        # The first Init ends at the control plane (no binaries in its request): irrelevant.
        with serve_init(node, LocalControlPlane(tmp_path / "cp")) as target:
            runner = threading.Thread(
                target=lambda: first.append(call_init(target, init_request([component])))
            )
            runner.start()
            time.sleep(1.0)
            with pytest.raises(grpc.RpcError) as info:
                call_init(target, init_request([component]))
            assert info.value.code() == grpc.StatusCode.ABORTED
            assert info.value.received == []
            release.set()
            runner.join(timeout=60)
        assert first[0][-1].WhichOneof("kind") == "init_failure"  # type: ignore[index]
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def test_undecodable_request_is_invalid_argument(node: NodeParts) -> None:
    # Was INTERNAL ("Exception deserializing request!"), grpcio's own answer; the shared
    # ErrorStatusInterceptor every AttestedServer carries refuses it (issue 14).
    validator = node_validator(Measurements({15: Measurement(bytes(32), warn_only=True)}))
    with serve_init(node, _not_called) as target, atls.connect(target, [validator]) as channel:
        responses = channel.channel.unary_stream("/init.API/Init")(b"\x0a\x10truncated", timeout=30)
        with pytest.raises(grpc.RpcError) as info:
            list(responses)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _assert_untouched(node)
