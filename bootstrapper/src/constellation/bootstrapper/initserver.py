"""The init server: ``init.API/Init``, through which the CLI turns this node into the first
control-plane node of a new cluster.

The CLI reaches this server over aTLS (the node attests, the CLI verifies it before sending the
master secret). The request is then handled in a fixed order, and the order is the security
argument:

1. **Init secret first.** The request's init secret is checked against the bcrypt hash from the
   instance metadata before anything else happens. A wrong secret gets PERMISSION_DENIED and
   nothing else: no progress, no node logs (the Go version streamed the node's journal to any
   caller, DESIGN.md §9). Request validation comes after this check so that an unauthenticated
   caller learns nothing about what a valid request looks like.
2. **Validate** the request (INVALID_ARGUMENT): master secret >= 16 bytes, master salt and
   measurement salt exactly 32 bytes, a Kubernetes version, well-formed components.
3. **Derive** the measurement secret (master secret + salt) and the cluster ID (measurement
   secret + measurement salt), DESIGN.md §3.
4. **Fetch and verify every component** against the hash in the request. A mismatch aborts the
   init naming the component, *before* the node lock: the node stays usable.
5. **Take the node lock** (PCR 15 := cluster ID): the point of no return. If the join client
   took it first, FAILED_PRECONDITION. From here on a failure is reported as the stream's
   final ``InitFailure`` message; the node cannot be initialized a second time.
6. Rekey the state disk to ``derive_key(master_secret, master_salt, "key-" + uuid, 32)``,
   install the verified components, bring up the control plane, persist the node state
   atomically, and answer ``InitSuccess{kubeconfig, owner_id, cluster_id}``.

Each irreversible step (lock, rekey, control plane, state) is journaled before it runs
(:mod:`.journal`). A server built without an initial disk key *resumes* the Init the journal
names: the bootstrapper died after the lock, the vTPM kept it. It then accepts only an Init
whose secrets derive the journaled cluster ID (the CLI repeats ``apply`` with what its workspace
saved; anything else is FAILED_PRECONDITION, :class:`InterruptedInitError`, saying what to do),
skips the lock, completes the rekey (or, if the cluster key never reached the disk, re-formats
it under the same UUID first: it never held data) and runs the remaining steps again.

Every step after the secret check streams a ``Progress`` message (phase names are stable, the
messages never contain secrets). Errors before the point of no return are mapped to gRPC status
codes in one place, :func:`status_for`; each such status carries the trailing metadata
``constellation-init-refusal`` so the CLI can tell a refusal from a node that died mid-stream.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import queue
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc
import structlog

from constellation.attestation.errors import ConstellationError
from constellation.attestation.identity import Role
from constellation.attestation.kdf import (
    derive_cluster_id,
    derive_key,
    derive_measurement_secret,
)
from constellation.bootstrapper.atomicfile import SECRET_MODE, write_atomic
from constellation.bootstrapper.errors import (
    BootstrapperError,
    InitSecretError,
    InitSecretMismatchError,
)
from constellation.bootstrapper.initsecret import check_init_secret
from constellation.bootstrapper.installer import (
    ComponentFetchError,
    ComponentHashMismatchError,
    ComponentInstaller,
    InvalidComponentError,
    StagedComponents,
    parse_components,
)
from constellation.bootstrapper.journal import (
    Journal,
    JournalPath,
    JournalRecord,
    Step,
    journal_for,
)
from constellation.bootstrapper.kubernetes.controlplane import ControlPlane, ControlPlaneBinaries
from constellation.bootstrapper.metadata import MetadataProvider
from constellation.bootstrapper.nodestate import NodeState, save_node_state
from constellation.bootstrapper.registration import (
    KubeletFiles,
    RegistrationError,
    create_kubelet_identity,
    label_control_plane_node,
    register_node,
    sign_own_kubelet_csr,
    validate_node_name,
)
from constellation.bootstrapper.statedisk import DiskKey, StateDisk
from constellation.proto import init_pb2, init_pb2_grpc

_log = structlog.get_logger("constellation.bootstrapper.init")

MIN_MASTER_SECRET_LENGTH = 16
MAX_MASTER_SECRET_LENGTH = 512
SALT_LENGTH = 32
DISK_KEY_LENGTH = 32
OWNER_ID_INFO = "key-ownerID"
OWNER_ID_LENGTH = 32
_VERSION = re.compile(r"^v?\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
_CLUSTER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_MAX_SANS = 64
# Trailing metadata of every status the init server sends on purpose (a refusal); a status
# without it comes from the transport (the node died, the connection broke).
REFUSAL_METADATA_KEY = "constellation-init-refusal"


class InitError(BootstrapperError):
    """Root of the errors of an ``Init`` request."""


class InitRequestError(InitError):
    """The request is malformed (INVALID_ARGUMENT); the message names the field."""


class NodeAlreadyInitializedError(InitError):
    """The node lock is taken: this node has joined or initialized a cluster already."""


class InitSecretHashUnavailableError(InitSecretError):
    """The node cannot check init secrets: its metadata (the bcrypt hash) is unreadable."""


class InitInProgressError(InitError):
    """Another ``Init`` is running on this node right now."""


class InterruptedInitError(InitError):
    """The node resumes an interrupted Init of another cluster than the request derives."""


@dataclass(frozen=True)
class ControlPlaneParameters:
    """What the control plane of the first node is brought up with (no secrets)."""

    node_name: str
    node_ip: str
    cluster_name: str
    kubernetes_version: str
    apiserver_cert_sans: tuple[str, ...]
    service_cidr: str
    # Installed (hash-verified) components by name, e.g. "kube-apiserver" -> its path.
    binaries: Mapping[str, Path]


class ControlPlaneStarter(Protocol):
    """Brings up etcd + kube-apiserver + controller-manager; returns the admin kubeconfig.

    The kubeconfig's server URL must be reachable from the CLI (loopback in mini mode).
    """

    def __call__(self, parameters: ControlPlaneParameters) -> bytes: ...


@dataclass(frozen=True)
class InitOutcome:
    """What a successful init produced (public values only), for the node's supervisor."""

    cluster_id: bytes
    owner_id: bytes
    node_state: NodeState


def _ignore(_: object) -> None:
    """Default callback: a standalone init server has nobody to tell."""


@dataclass(frozen=True)
class InitCallbacks:
    """How the init server tells the node supervisor that it committed (or failed after)."""

    on_initialized: Callable[[InitOutcome], None] = _ignore
    on_failed: Callable[[str], None] = _ignore


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The one place that maps an ``Init`` error to a gRPC status and a caller-safe message."""
    if isinstance(error, InitSecretMismatchError):
        return grpc.StatusCode.PERMISSION_DENIED, "the init secret does not match"
    if isinstance(error, InitSecretError):
        # A bad hash in the metadata is the node's problem; the caller learns no more.
        return grpc.StatusCode.FAILED_PRECONDITION, "this node cannot check init secrets"
    if isinstance(error, InitRequestError | InvalidComponentError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error)
    if isinstance(
        error, NodeAlreadyInitializedError | ComponentHashMismatchError | InterruptedInitError
    ):
        return grpc.StatusCode.FAILED_PRECONDITION, str(error)
    if isinstance(error, InitInProgressError):
        return grpc.StatusCode.ABORTED, str(error)
    if isinstance(error, ComponentFetchError):
        return grpc.StatusCode.UNAVAILABLE, str(error)
    if isinstance(error, ConstellationError):
        return grpc.StatusCode.INTERNAL, str(error)
    return grpc.StatusCode.INTERNAL, "internal error"


def validate_request(request: init_pb2.InitRequest) -> None:
    """Check every field of an ``InitRequest`` (after the init secret was accepted)."""
    if not MIN_MASTER_SECRET_LENGTH <= len(request.master_secret) <= MAX_MASTER_SECRET_LENGTH:
        raise InitRequestError(
            f"master_secret must be {MIN_MASTER_SECRET_LENGTH}..{MAX_MASTER_SECRET_LENGTH} "
            f"bytes, got {len(request.master_secret)}"
        )
    for name in ("master_salt", "measurement_salt"):
        value: bytes = getattr(request, name)
        if len(value) != SALT_LENGTH:
            raise InitRequestError(f"{name} must be {SALT_LENGTH} bytes, got {len(value)}")
    if not _VERSION.fullmatch(request.kubernetes_version):
        raise InitRequestError(
            f"kubernetes_version must look like v1.31.1, got {request.kubernetes_version[:40]!r}"
        )
    if request.cluster_name and not _CLUSTER_NAME.fullmatch(request.cluster_name):
        raise InitRequestError(
            "cluster_name must be a lower-case DNS label of at most 63 characters"
        )
    if len(request.apiserver_cert_sans) > _MAX_SANS:
        raise InitRequestError(f"at most {_MAX_SANS} apiserver_cert_sans are allowed")
    for san in request.apiserver_cert_sans:
        if not _is_ip(san) and not re.fullmatch(r"[A-Za-z0-9*]([A-Za-z0-9.*-]{0,252})", san):
            raise InitRequestError(f"apiserver_cert_sans entry {san[:80]!r} is no IP or DNS name")
    if request.service_cidr:
        try:
            ipaddress.ip_network(request.service_cidr)
        except ValueError:
            raise InitRequestError(
                f"service_cidr {request.service_cidr[:60]!r} is not a CIDR"
            ) from None
    parse_components(request.kubernetes_components)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def derive_owner_id(master_secret: bytes, master_salt: bytes) -> bytes:
    """A public identifier of whoever holds the master secret (cf. the cluster ID)."""
    return derive_key(master_secret, master_salt, OWNER_ID_INFO, OWNER_ID_LENGTH)


def state_disk_key(master_secret: bytes, master_salt: bytes, disk_uuid: str) -> DiskKey:
    """``GetDataKey(lowercase(uuid), 32)`` computed locally from the master secret."""
    return DiskKey(
        derive_key(master_secret, master_salt, "key-" + disk_uuid.lower(), DISK_KEY_LENGTH)
    )


class NodeLatch(Protocol):
    """The node lock as the bootstrapper uses it (``constellation.attestation.nodelock``)."""

    def try_lock(self, cluster_id: bytes) -> bool: ...

    def is_initialized(self) -> bool: ...


def _progress(phase: str, message: str) -> init_pb2.InitResponse:
    return init_pb2.InitResponse(progress=init_pb2.Progress(phase=phase, message=message))


class InitServer(init_pb2_grpc.APIServicer):
    """Serves ``init.API``; see the module docstring for the order of the steps."""

    def __init__(
        self,
        *,
        metadata: MetadataProvider,
        node_lock: NodeLatch,
        state_disk: StateDisk,
        initial_disk_key: DiskKey | None,
        installer: ComponentInstaller,
        control_plane: ControlPlaneStarter,
        node_state_path: Path,
        callbacks: InitCallbacks | None = None,
        journal: Journal | None = None,
    ) -> None:
        self._metadata = metadata
        self._lock = node_lock
        self._disk = state_disk
        self._initial_disk_key = initial_disk_key
        self._installer = installer
        self._control_plane = control_plane
        self._node_state_path = node_state_path
        self._callbacks = callbacks or InitCallbacks()
        self._busy = threading.Lock()
        self._journal = journal or journal_for(node_state_path)
        self._resume: JournalRecord | None = None
        if initial_disk_key is None:
            record = self._journal.read()
            if record is None or record.path is not JournalPath.INIT or record.cluster_id is None:
                raise InitError(
                    "an init server without an initial disk key can only resume an interrupted "
                    "Init, and the journal names none"
                )
            self._resume = record

    def Init(
        self, request: init_pb2.InitRequest, context: grpc.ServicerContext
    ) -> Iterator[init_pb2.InitResponse]:
        try:
            yield from self._init(request)
        except ConstellationError as error:
            code, message = status_for(error)
            _log.warning("init.refused", code=code.name, error=message)
            # Tells the CLI this status is the node's decision, not a transport failure.
            context.set_trailing_metadata(((REFUSAL_METADATA_KEY, code.name),))
            context.abort(code, message)
        except Exception:
            # A bug, not a refusal: details go to the node's log only, never to the caller.
            _log.exception("init.internal_error")
            context.abort(grpc.StatusCode.INTERNAL, "internal error; see the node's log")

    def _check_secret(self, request: init_pb2.InitRequest) -> None:
        """Step 1. Whatever fails here, an unauthenticated caller learns one sentence."""
        try:
            secret_hash = self._metadata.init_secret_hash()
        except ConstellationError as error:
            _log.error("init.metadata_unavailable", error=str(error))
            raise InitSecretHashUnavailableError(
                "the init-secret hash could not be read from the instance metadata"
            ) from None
        check_init_secret(request.init_secret, secret_hash)

    def _init(self, request: init_pb2.InitRequest) -> Iterator[init_pb2.InitResponse]:
        """The steps before the point of no return raise; the rest stream ``InitFailure``.

        The work runs in its own thread and the stream only relays its messages: a caller that
        disconnects after the node lock was taken cannot leave the node half-initialized.
        """
        # Step 1: nothing (not even "busy") is revealed to a caller without the init secret.
        self._check_secret(request)
        if not self._busy.acquire(blocking=False):
            raise InitInProgressError("another Init is running on this node; try again later")
        messages: queue.Queue[init_pb2.InitResponse | Exception | None] = queue.Queue()

        def work() -> None:
            try:
                for message in self._init_authorized(request):
                    messages.put(message)
            except Exception as exc:  # relayed to the stream, which maps it to a status
                messages.put(exc)
            finally:
                self._busy.release()
                messages.put(None)

        threading.Thread(target=work, name="init", daemon=True).start()
        while (item := messages.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item

    def _init_authorized(self, request: init_pb2.InitRequest) -> Iterator[init_pb2.InitResponse]:
        resume = self._resume
        if resume is None and self._lock.is_initialized():
            raise NodeAlreadyInitializedError(
                "this node is already part of a cluster (its node lock is taken)"
            )
        validate_request(request)
        yield _progress("validate", "init request accepted")

        measurement_secret = derive_measurement_secret(request.master_secret, request.master_salt)
        cluster_id = derive_cluster_id(measurement_secret, request.measurement_salt)
        owner_id = derive_owner_id(request.master_secret, request.master_salt)
        if resume is not None and cluster_id != resume.cluster_id:
            assert resume.cluster_id is not None
            raise InterruptedInitError(
                f"this node is locked to cluster {resume.cluster_id.hex()} by an Init that was "
                f"interrupted at step '{resume.step.value}'; this request derives cluster "
                f"{cluster_id.hex()}. Run `constellation apply` again from the workspace that "
                "started that Init (same master secret and measurement salt) to complete it, "
                "or reboot the node to reset its node lock: it then re-initializes its state "
                "disk by itself and accepts a new Init"
            )
        yield _progress("derive", f"cluster ID {cluster_id.hex()}")

        count = len(request.kubernetes_components)
        yield _progress("components.verify", f"fetching and verifying {count} components")
        with self._installer.stage(request.kubernetes_components) as staged:
            yield _progress("components.verify", f"all {count} component hashes match")

            disk_uuid = self._disk.uuid()
            if resume is not None:
                _log.warning("init.resumed", cluster_id=cluster_id.hex(), step=resume.step.value)
                yield _progress(
                    "node-lock",
                    f"resuming the Init interrupted at step '{resume.step.value}' (PCR 15 "
                    "already carries this cluster's mark)",
                )
            elif not self._journal.take_lock(
                self._lock.try_lock,
                path=JournalPath.INIT,
                disk_uuid=disk_uuid,
                cluster_id=cluster_id,
            ):
                raise NodeAlreadyInitializedError(
                    "the node lock was taken by the join client: this node joined a cluster "
                    "and cannot be initialized"
                )
            else:
                _log.info("init.locked", cluster_id=cluster_id.hex())
                yield _progress("node-lock", "node lock taken (PCR 15 marked with the cluster ID)")
            record = JournalRecord(Step.LOCK, disk_uuid, JournalPath.INIT, cluster_id)
            try:
                yield from self._after_lock(request, staged, record, owner_id)
            except Exception as error:
                if isinstance(error, ConstellationError):
                    reason = str(error)
                    _log.error("init.failed_after_lock", error=reason)
                else:  # a bug: the details stay in the node's log
                    reason = "internal error; see the node's log"
                    _log.exception("init.failed_after_lock")
                self._callbacks.on_failed(reason)
                yield init_pb2.InitResponse(
                    init_failure=init_pb2.InitFailure(
                        error=f"init failed after the node lock was taken: {reason}"
                    )
                )

    def _after_lock(
        self,
        request: init_pb2.InitRequest,
        staged: StagedComponents,
        record: JournalRecord,
        owner_id: bytes,
    ) -> Iterator[init_pb2.InitResponse]:
        cluster_id = record.cluster_id
        assert cluster_id is not None
        disk_uuid = record.disk_uuid
        self._journal.record(record.advance(Step.REKEY))
        key = state_disk_key(request.master_secret, request.master_salt, disk_uuid)
        self._rekey(key)
        yield _progress("state-disk", f"state disk {disk_uuid} rekeyed to the cluster key")

        installed = staged.install()
        binaries = {
            spec.name: path for spec, path in zip(staged.components, installed, strict=True)
        }
        yield _progress("components.install", f"installed {len(installed)} components")

        node = self._metadata.self()
        parameters = ControlPlaneParameters(
            node_name=node.name,
            node_ip=node.private_ip,
            cluster_name=request.cluster_name or "constellation",
            kubernetes_version=request.kubernetes_version,
            apiserver_cert_sans=tuple(request.apiserver_cert_sans),
            service_cidr=request.service_cidr,
            binaries=binaries,
        )
        yield _progress("control-plane", "starting etcd, kube-apiserver, controller-manager")
        self._journal.record(record.advance(Step.CONTROL_PLANE))
        kubeconfig = self._control_plane(parameters)
        self._journal.crash_point("control-plane")
        yield _progress("control-plane", "control plane is up")

        state = NodeState(
            cluster_id=cluster_id,
            measurement_salt=bytes(request.measurement_salt),
            role=Role.CONTROL_PLANE,
            disk_uuid=disk_uuid,
        )
        self._journal.record(record.advance(Step.STATE))
        save_node_state(self._node_state_path, state)
        self._journal.crash_point("state")
        self._journal.clear()
        _log.info("init.done", cluster_id=cluster_id.hex(), node=node.name)
        self._callbacks.on_initialized(InitOutcome(cluster_id, owner_id, state))
        yield init_pb2.InitResponse(
            init_success=init_pb2.InitSuccess(
                kubeconfig=kubeconfig, owner_id=owner_id, cluster_id=cluster_id
            )
        )

    def _rekey(self, key: DiskKey) -> None:
        """Rekey from the initial passphrase, or complete the rekey of a resumed Init.

        Resuming, the initial passphrase is gone with the process that made it. If the cluster
        key opens a keyslot, only the old slot is left to wipe. If it opens none, the crash came
        before the new key was added: nothing but the lost passphrase opens the disk and the
        disk never held data (everything that writes comes after the rekey), so it is
        re-formatted under the same UUID and rekeyed from the fresh passphrase.
        """
        resume = self._resume
        if resume is None:
            assert self._initial_disk_key is not None
            self._disk.rekey(self._initial_disk_key, key, on_step=self._journal.crash_point)
            return
        if self._disk.key_matches(key):
            self._disk.finish_rekey(key)
            return
        if resume.step.rank > Step.REKEY.rank:
            raise InitError(
                f"the journal says the rekey of {resume.disk_uuid} finished, but the cluster key "
                "opens no keyslot; the disk is not the one this Init rekeyed. Reboot the node "
                "to re-initialize it"
            )
        _log.warning(
            "init.disk_reinitialized",
            disk_uuid=resume.disk_uuid,
            reason="the cluster key never reached the disk and its initial passphrase died "
            "with the interrupted bootstrapper; the disk never held data",
        )
        initial = self._disk.format(uuid=resume.disk_uuid, replace=True)
        self._disk.rekey(initial, key, on_step=self._journal.crash_point)


class LocalControlPlane:
    """A :class:`ControlPlaneStarter` running the real loopback control plane as children.

    The binaries are the components the init request installed (after their hash check); the
    control plane's files live in ``directory``. ``stop()`` tears the children down by PID.

    With ``kubelet_files`` the node also becomes a Node of its own cluster: a fresh kubelet key
    and CSR, signed with the new cluster CA (:func:`sign_own_kubelet_csr`), the Node object
    created with that certificate, then labelled control plane by the admin.

    After a successful start, ``restart.json`` in ``directory`` records what :meth:`restart`
    needs to bring the same control plane up again after a reboot: the Kubernetes version, the
    node's name and IP, and every binary's path and SHA-256 (checked again before it runs).
    """

    def __init__(
        self,
        directory: Path,
        *,
        ready_timeout_s: float = 120.0,
        kubelet_files: KubeletFiles | None = None,
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self._directory = directory
        self._ready_timeout_s = ready_timeout_s
        self._kubelet_files = kubelet_files
        self._clock = clock
        self.plane: ControlPlane | None = None

    @property
    def restart_record_path(self) -> Path:
        return self._directory / RESTART_RECORD_FILE

    def is_installed(self) -> bool:
        """True if this node brought up a control plane here (a restart record exists)."""
        return self.restart_record_path.is_file()

    def forget(self) -> None:
        """Drop the restart record of an init that never committed (no node state).

        Without it a later reboot would restart a control plane of a cluster that never
        existed; the PKI and etcd files stay (a new init's warm start replaces what it needs).
        """
        try:
            self.restart_record_path.unlink()
        except FileNotFoundError:
            return
        _log.warning("control_plane.forgotten", directory=str(self._directory))

    def __call__(self, parameters: ControlPlaneParameters) -> bytes:
        missing = sorted(
            name
            for name in ("kubeadm", "etcd", "kube-apiserver")
            if name not in parameters.binaries
        )
        if missing:
            raise InitRequestError(
                f"kubernetes_components lacks {', '.join(missing)} (needed for the control plane)"
            )
        binaries = ControlPlaneBinaries(
            kubeadm=parameters.binaries["kubeadm"],
            etcd=parameters.binaries["etcd"],
            kube_apiserver=parameters.binaries["kube-apiserver"],
            kube_controller_manager=parameters.binaries.get("kube-controller-manager"),
        )
        self._directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        kubeconfig = self._start(binaries, parameters.kubernetes_version, parameters.node_name)
        record = RestartRecord(
            kubernetes_version=parameters.kubernetes_version,
            node_name=parameters.node_name,
            node_ip=parameters.node_ip,
            binaries={name: (path, _sha256(path)) for name, path in _named(binaries).items()},
        )
        write_atomic(self.restart_record_path, record.to_json(), mode=SECRET_MODE)
        if self._kubelet_files is not None:
            self._register(kubeconfig, parameters.node_name, parameters.node_ip)
        return kubeconfig

    def restart(self) -> bytes:
        """Bring the control plane of an initialized node up again from its own files.

        The binaries must still hash to what was recorded when init installed them; the PKI,
        kubeconfigs and etcd data are the ones init created (a warm start). The node's Node
        object is registered again if it is missing. Returns the admin kubeconfig.
        """
        record = RestartRecord.load(self.restart_record_path)
        for name, (path, expected) in sorted(record.binaries.items()):
            actual = _sha256(path)
            if actual != expected:
                raise ControlPlaneRestartError(
                    f"{name} at {path} changed since init (SHA-256 {actual}, recorded "
                    f"{expected}); refusing to run it"
                )
        binaries = ControlPlaneBinaries(
            kubeadm=record.binaries["kubeadm"][0],
            etcd=record.binaries["etcd"][0],
            kube_apiserver=record.binaries["kube-apiserver"][0],
            kube_controller_manager=record.binaries.get("kube-controller-manager", (None, ""))[0],
        )
        kubeconfig = self._start(binaries, record.kubernetes_version, record.node_name)
        if self._kubelet_files is not None:
            self._register(kubeconfig, record.node_name, record.node_ip, reuse=True)
        _log.info("control_plane.restarted", node=record.node_name)
        return kubeconfig

    def _start(self, binaries: ControlPlaneBinaries, version: str, node_name: str) -> bytes:
        plane = ControlPlane(
            self._directory,
            binaries,
            kubernetes_version=version,
            node_name=node_name,
            ready_timeout=self._ready_timeout_s,
        )
        plane.start()
        self.plane = plane
        return plane.admin_kubeconfig.read_bytes()

    def _register(
        self, kubeconfig: bytes, node_name: str, node_ip: str, *, reuse: bool = False
    ) -> None:
        """Make this node a Node: its own kubelet certificate, then the control-plane label."""
        assert self.plane is not None
        assert self._kubelet_files is not None
        files = self._kubelet_files
        if not (reuse and files.key_path.is_file() and files.cert_path.is_file()):
            identity = create_kubelet_identity(node_name, node_ip)
            cert_pem = sign_own_kubelet_csr(
                identity,
                self.plane.ca_cert_path.read_bytes(),
                self.plane.ca_key_path.read_bytes(),
                now=self._clock(),
            )
            files.write(identity, cert_pem, self.plane.ca_cert_path.read_bytes())
        register_node(
            api_server_endpoint=self.plane.server,
            files=files,
            node_name=node_name,
            node_ip=node_ip,
        )
        label_control_plane_node(admin_kubeconfig=kubeconfig, node_name=node_name)
        _log.info("control_plane.node_registered", node=node_name)

    def stop(self) -> None:
        if self.plane is not None:
            self.plane.stop()
            self.plane = None


RESTART_RECORD_FILE = "restart.json"
RESTART_RECORD_VERSION = 1
_MAX_RESTART_RECORD = 64 * 1024


class ControlPlaneRestartError(BootstrapperError):
    """The control plane of an initialized node cannot be restarted from its own files."""


@dataclass(frozen=True)
class RestartRecord:
    """What the control plane was brought up with (no secrets): ``restart.json``."""

    kubernetes_version: str
    node_name: str
    node_ip: str
    binaries: Mapping[str, tuple[Path, str]]  # name -> (installed path, hex SHA-256)

    def to_json(self) -> bytes:
        document = {
            "version": RESTART_RECORD_VERSION,
            "kubernetesVersion": self.kubernetes_version,
            "nodeName": self.node_name,
            "nodeIP": self.node_ip,
            "binaries": {
                name: {"path": str(path), "sha256": digest}
                for name, (path, digest) in sorted(self.binaries.items())
            },
        }
        return (json.dumps(document, indent=2) + "\n").encode()

    @classmethod
    def load(cls, path: Path) -> RestartRecord:
        """Read ``restart.json`` strictly; anything unexpected is ``ControlPlaneRestartError``."""
        try:
            with path.open("rb") as handle:
                data = handle.read(_MAX_RESTART_RECORD + 1)
        except OSError as exc:
            raise ControlPlaneRestartError(
                f"cannot read {path}: {exc.strerror or exc}; was this node initialized?"
            ) from None
        try:
            if len(data) > _MAX_RESTART_RECORD:
                raise ValueError("too large")
            document = json.loads(data)
            if document["version"] != RESTART_RECORD_VERSION:
                raise ValueError(f"version must be {RESTART_RECORD_VERSION}")
            binaries = {
                str(name): (Path(entry["path"]), str(entry["sha256"]))
                for name, entry in document["binaries"].items()
            }
            for name in ("kubeadm", "etcd", "kube-apiserver"):
                if name not in binaries:
                    raise ValueError(f"no {name}")
            for _, digest in binaries.values():
                if not re.fullmatch(r"[0-9a-f]{64}", digest):
                    raise ValueError("a sha256 is not 64 hex digits")
            return cls(
                kubernetes_version=str(document["kubernetesVersion"]),
                node_name=validate_node_name(str(document["nodeName"])),
                node_ip=str(ipaddress.ip_address(document["nodeIP"])),
                binaries=binaries,
            )
        except (ValueError, KeyError, TypeError, AttributeError, RegistrationError) as exc:
            raise ControlPlaneRestartError(f"{path} is corrupt: {exc}") from None


def _named(binaries: ControlPlaneBinaries) -> dict[str, Path]:
    named = {
        "kubeadm": binaries.kubeadm,
        "etcd": binaries.etcd,
        "kube-apiserver": binaries.kube_apiserver,
    }
    if binaries.kube_controller_manager is not None:
        named["kube-controller-manager"] = binaries.kube_controller_manager
    return named


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise ControlPlaneRestartError(f"cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()
