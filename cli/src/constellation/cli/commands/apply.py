"""``constellation apply``: initialize the first control-plane node and install the services.

Order (DESIGN.md §2 steps 2-4), and why:

1. The master secret (key + salt) is generated and saved (0600) **before** it is sent, so a
   cluster never exists whose master secret the admin does not hold.
2. The first control-plane node is attested over aTLS against the configured measurements with
   PCR 15 expected zero (an initialized node is refused); only then is ``init.API/Init`` sent
   with the master secret, a fresh 32-byte measurement salt, the init secret, the Kubernetes
   version and the components (file URL + SHA-256 from the components lock).
3. The node's answer is checked: its cluster ID must be the one derived from what we sent.
   The admin kubeconfig (0600) and the cluster ID (state file) are saved atomically.

A node that stops answering mid-Init (crashed or rebooted) is not a refusal: the node
journals each irreversible step (``constellation.bootstrapper.journal``). The measurement salt
is therefore saved in the state file *before* Init is sent, and ``apply`` run again repeats the
same Init (same master secret and salts, so the same cluster ID and disk key); it then also
accepts the node with PCR 15 already marked for exactly that cluster ID (the node took its lock
for this Init before it died) and the node completes the remaining steps. A status the node
sent on purpose (it carries the trailing metadata ``constellation-init-refusal``) is a
refusal (exit 1); a broken stream, UNAVAILABLE or a deadline is :class:`NodeStoppedError`
(exit 3: run ``apply`` again).
4. ``join-config`` (variant, measurements with PCR 15 zero, the measurement salt), the master
   secret, the control-plane PKI and the components list are written into the cluster through
   the API, together with the KeyService's mutual TLS: a fresh cluster-internal service CA
   issues the KeyService's server and the JoinService's client certificate and is then
   dropped, its key never stored (:mod:`constellation.cli.servicepki`), so only the
   JoinService can ever call the KeyService. The services are then started from those objects
   as read back from the API (:mod:`constellation.cli.mini.clusterobjects`,
   :mod:`constellation.cli.mini.services`).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import click
import grpc
import yaml
from cryptography import x509

from constellation.attestation import atls
from constellation.attestation.errors import ValidationError
from constellation.attestation.evidence import Validator, VerifiedEvidence
from constellation.attestation.identity import Role
from constellation.attestation.identity.policy import RequireRole
from constellation.attestation.kdf import derive_cluster_id, derive_measurement_secret
from constellation.attestation.measurements import Measurements
from constellation.bootstrapper.atomicfile import SECRET_MODE, write_atomic
from constellation.bootstrapper.metadata import Endpoint
from constellation.cli.config import Config, Provider
from constellation.cli.context import CLIContext, current
from constellation.cli.mini import clusterobjects, services
from constellation.cli.mini.cluster import (
    INIT_COMPONENTS,
    MiniRecord,
    component_hashes,
    created_files_tracked,
    join_components_document,
    kubeconfig_path,
    kubernetes_binaries,
    load_init_secret,
)
from constellation.cli.mini.errors import ApplyError
from constellation.cli.mini.serviceaccount import joinservice_kubeconfig
from constellation.cli.nodeverify import build_validator
from constellation.cli.output import OutputFormat, output_option
from constellation.cli.servicepki import issue_service_pki
from constellation.cli.workspace import ClusterState, MasterSecret, NodeRecord, Workspace
from constellation.proto import components_pb2, init_pb2, init_pb2_grpc

MEASUREMENT_SALT_LENGTH = 32
ATTEST_TIMEOUT_S = 60.0
INIT_TIMEOUT_S = 900.0
# Exit codes of `apply` (documented in its help): 1 refused or failed, 3 the node stopped
# answering during init (run apply again to resume).
EXIT_NODE_STOPPED = 3
# Must match constellation.bootstrapper.initserver.REFUSAL_METADATA_KEY.
REFUSAL_METADATA_KEY = "constellation-init-refusal"
# Codes a broken connection produces by itself; any other code is the node's decision.
_TRANSPORT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)


class InitRefusedError(ApplyError):
    """The node answered the Init with a status it chose (exit 1)."""


class NodeStoppedError(ApplyError):
    """The node stopped answering during Init: it crashed or rebooted (exit 3)."""

    exit_code = EXIT_NODE_STOPPED


def init_validator(
    variant: str,
    measurements: Measurements,
    platform_roots: Sequence[x509.Certificate] = (),
    *,
    resuming: bytes | None = None,
) -> Validator:
    """What the first node must prove before Init: the image, PCR 15 still zero, a replaying
    event log, and a platform identity as a control-plane node (the master secret goes to no
    other).

    ``resuming`` is the cluster ID an earlier, interrupted Init of this workspace derives: PCR
    15 may then also carry exactly its mark (that node took its lock for this Init and died).
    """
    why = "Init (and the master secret) only go to a control-plane node"
    fresh = RequireRole(
        build_validator(variant, measurements.with_pcr15(None), platform_roots),
        Role.CONTROL_PLANE,
        why=why,
    )
    if resuming is None:
        return fresh
    marked = RequireRole(
        build_validator(variant, measurements.with_pcr15(resuming), platform_roots),
        Role.CONTROL_PLANE,
        why=why,
    )
    return FreshOrResuming(fresh, marked)


class FreshOrResuming:
    """A validator accepting what ``fresh`` or ``marked`` accepts; refusals name ``fresh``'s
    failures (a node that is neither is judged as a fresh node)."""

    def __init__(self, fresh: Validator, marked: Validator) -> None:
        self._fresh = fresh
        self._marked = marked

    @property
    def variant(self) -> str:
        return self._fresh.variant

    def verify(self, document: bytes, nonce: bytes) -> VerifiedEvidence:
        try:
            return self._fresh.verify(document, nonce)
        except ValidationError as fresh_error:
            try:
                return self._marked.verify(document, nonce)
            except ValidationError:
                raise fresh_error from None

    def validate(self, document: bytes, nonce: bytes) -> bytes:
        return self.verify(document, nonce).user_data


def send_init(
    endpoint: Endpoint,
    validator: Validator,
    request: init_pb2.InitRequest,
    *,
    progress: Callable[[str], None],
    timeout: float = INIT_TIMEOUT_S,
    attest_timeout: float = ATTEST_TIMEOUT_S,
) -> init_pb2.InitSuccess:
    """Attest the node, stream Init, and tell a refusal from a node that stopped answering."""
    progress(f"attesting the first control-plane node at {endpoint}")
    success = None
    with atls.connect(str(endpoint), [validator], timeout=attest_timeout) as channel:
        progress("the node is attested; sending Init")
        stream = init_pb2_grpc.APIStub(channel.channel).Init(request, timeout=timeout)
        try:
            for response in stream:
                kind = response.WhichOneof("kind")
                if kind == "progress":
                    progress(f"node: {response.progress.phase}: {response.progress.message}")
                elif kind == "init_failure":
                    raise ApplyError(
                        f"the node failed the init: {response.init_failure.error}",
                        hint="see the node's bootstrapper log; then reboot the node and run "
                        "`constellation apply` again, or recreate the cluster",
                    )
                elif kind == "init_success":
                    success = response.init_success
        except grpc.RpcError as err:
            raise init_error(err, endpoint) from None
    if success is None:
        raise NodeStoppedError(
            f"the node at {endpoint} closed the init stream without an answer",
            hint="run `constellation apply` again to resume; the node keeps its journal",
        )
    return success


def init_error(err: grpc.RpcError, endpoint: Endpoint) -> ApplyError:
    """A refusal (the node's own status) or a node that stopped answering (anything else)."""
    code = err.code() if isinstance(err, grpc.Call) else None
    details = (err.details() if isinstance(err, grpc.Call) else "") or ""
    trailing: Sequence[tuple[str, str | bytes]] = (
        err.trailing_metadata() if isinstance(err, grpc.Call) else None
    ) or ()
    deliberate = any(key == REFUSAL_METADATA_KEY for key, _ in trailing)
    name = code.name if code is not None else "no status"
    if deliberate or (code is not None and code not in _TRANSPORT_CODES):
        return InitRefusedError(
            f"the node refused the init: {name}: {details}",
            hint="check the init secret and the node's state; nothing was initialized"
            if name in ("PERMISSION_DENIED", "INVALID_ARGUMENT")
            else "follow the node's message above; see the node's bootstrapper log",
        )
    return NodeStoppedError(
        f"the node at {endpoint} stopped answering during init (crashed or rebooted): "
        f"{name}: {details}",
        hint="run `constellation apply` again to resume; the node keeps its journal",
    )


@dataclass(frozen=True)
class InitResult:
    cluster_id: bytes
    measurement_salt: bytes
    kubeconfig: Path


def _master_secret(workspace: Workspace) -> MasterSecret:
    if workspace.master_secret_path.exists():
        return workspace.load_master_secret()
    secret = MasterSecret.generate()
    workspace.save_master_secret(secret)
    return secret


def _measurement_salt(workspace: Workspace, endpoint: Endpoint) -> tuple[bytes, bool]:
    """The salt of an Init this workspace sent before (``True``: repeat it), or a fresh one,
    saved before it is sent so that a repeated ``apply`` derives the same cluster ID."""
    state = ClusterState(name="constellation")
    if workspace.state_path.exists():
        state = workspace.load_state()
        if state.cluster_id is None and state.measurement_salt is not None:
            return state.measurement_salt, True
    salt = secrets.token_bytes(MEASUREMENT_SALT_LENGTH)
    workspace.save_state(
        dataclasses.replace(
            state, name=state.name or "constellation", measurement_salt=salt, init_endpoint=endpoint
        )
    )
    return salt, False


def initialize(
    workspace: Workspace,
    config: Config,
    endpoint: Endpoint,
    record: MiniRecord,
    *,
    progress: Callable[[str], None],
    timeout: float = INIT_TIMEOUT_S,
) -> InitResult:
    """Steps 1-3: attest the first node, send Init, save what the admin must keep."""
    master = _master_secret(workspace)
    measurement_salt, resuming = _measurement_salt(workspace, endpoint)
    lock, installed = kubernetes_binaries(INIT_COMPONENTS)
    hashes = component_hashes(installed)
    request = init_pb2.InitRequest(
        master_secret=master.key,
        master_salt=master.salt,
        measurement_salt=measurement_salt,
        init_secret=load_init_secret(record).reveal(),
        kubernetes_version=lock.kubernetes_version,
        kubernetes_components=[
            components_pb2.Component(
                name=name,
                url=installed.path(name).as_uri(),
                hash="sha256:" + hashes[name],
                install_path=f"/usr/local/bin/{name}",
            )
            for name in INIT_COMPONENTS
        ],
        cluster_name="constellation",
    )
    expected_id = derive_cluster_id(
        derive_measurement_secret(master.key, master.salt), measurement_salt
    )
    validator = init_validator(
        config.attestation.variant,
        config.attestation.parsed_measurements(),
        config.attestation.parsed_platform_roots(),
        resuming=expected_id if resuming else None,
    )
    if resuming:
        progress("repeating the interrupted Init (same secrets, same cluster ID)")
    success = send_init(endpoint, validator, request, progress=progress, timeout=timeout)
    if success.cluster_id != expected_id:
        raise ApplyError(
            "the node answered with a cluster ID that does not derive from the secrets sent",
            hint="do not use this cluster",
        )
    kubeconfig = kubeconfig_path(workspace)
    write_atomic(kubeconfig, success.kubeconfig, mode=SECRET_MODE)
    state = ClusterState(
        name="constellation",
        cluster_id=success.cluster_id,
        measurement_salt=measurement_salt,
        init_endpoint=endpoint,
    )
    workspace.save_state(state)
    return InitResult(success.cluster_id, measurement_salt, kubeconfig)


def api_server_endpoint(kubeconfig: Path) -> str:
    try:
        document = yaml.safe_load(kubeconfig.read_bytes())
        server = str(document["clusters"][0]["cluster"]["server"])
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError):
        raise ApplyError(f"{kubeconfig} names no API server") from None
    return server.removeprefix("https://")


def install_services(
    workspace: Workspace,
    config: Config,
    record: MiniRecord,
    init: InitResult,
    *,
    progress: Callable[[str], None],
) -> None:
    """Step 4: the cluster objects, then the services configured from them."""
    lock, _ = kubernetes_binaries(INIT_COMPONENTS)
    master = workspace.load_master_secret()
    core = clusterobjects.core_api(init.kubeconfig)
    control_plane = record.control_plane()
    progress("writing join-config, the master secret, the PKIs and the components into the cluster")
    clusterobjects.write_cluster_objects(
        core,
        variant=config.attestation.variant,
        measurements=config.attestation.parsed_measurements(),
        platform_roots=config.attestation.platformRoots,
        measurement_salt=init.measurement_salt,
        master_key=master.key,
        master_salt=master.salt,
        pki_dir=control_plane.directory / "state" / "control-plane" / "pki",
        components=join_components_document(lock),
        service_pki=issue_service_pki(),
    )
    files = clusterobjects.MountedFiles(
        record.services_dir / "keyservice", record.services_dir / "joinservice"
    )
    clusterobjects.materialize(core, files)
    # Start everything first, then wait: each service spends most of its start-up importing.
    progress("starting the KeyService, the JoinService and one VerificationService per node")
    keyservice, keyservice_port = services.start_keyservice(files, record.logs_dir)
    record.record_process(keyservice)
    record.keyservice_port = keyservice_port
    progress("giving the JoinService its chart's ServiceAccount and Role")
    joinservice = services.start_joinservice(
        files,
        port=record.joinservice_port,
        keyservice_port=keyservice_port,
        kubeconfig=joinservice_kubeconfig(init.kubeconfig, record.services_dir),
        api_server_endpoint=api_server_endpoint(init.kubeconfig),
        node=control_plane,
        logs_dir=record.logs_dir,
    )
    record.record_process(joinservice)
    started = [_spawn_verification(record, node.name, progress=progress) for node in record.nodes]
    services.wait_serving(keyservice, keyservice_port)
    services.wait_serving(joinservice, record.joinservice_port)
    record.joinservice_running = True
    record.save()
    progress(f"the JoinService serves on 127.0.0.1:{record.joinservice_port}")
    for endpoint in started:
        _finish_verification(workspace, record, endpoint)


def _spawn_verification(
    record: MiniRecord, name: str, *, progress: Callable[[str], None]
) -> services.VerificationEndpoint:
    progress(f"starting the VerificationService of {name}")
    endpoint = services.start_verificationservice(record.node(name), record.logs_dir)
    record.record_process(endpoint.process)
    return endpoint


def start_verification(
    workspace: Workspace, record: MiniRecord, name: str, *, progress: Callable[[str], None]
) -> services.VerificationEndpoint:
    """Start a node's VerificationService and record its endpoint in the state file."""
    endpoint = _spawn_verification(record, name, progress=progress)
    _finish_verification(workspace, record, endpoint)
    return endpoint


def _finish_verification(
    workspace: Workspace, record: MiniRecord, endpoint: services.VerificationEndpoint
) -> None:
    services.wait_serving(endpoint.process, endpoint.grpc_port)
    record.verification.append(endpoint)
    record.save()
    node = record.node(endpoint.node)
    state = workspace.load_state()
    nodes = [n for n in state.nodes if n.name != node.name]
    nodes.append(NodeRecord(node.name, node.role.value, endpoint.grpc))
    verify_endpoint = state.verify_endpoint
    if node.role.value == "control-plane" and verify_endpoint is None:
        verify_endpoint = endpoint.grpc
    workspace.save_state(
        ClusterState(
            name=state.name,
            cluster_id=state.cluster_id,
            measurement_salt=state.measurement_salt,
            init_endpoint=state.init_endpoint,
            verify_endpoint=verify_endpoint,
            nodes=tuple(nodes),
        )
    )


def run_apply(ctx: CLIContext) -> InitResult:
    """``apply`` for a mini cluster whose nodes are up (``mini up`` calls this too)."""
    workspace = ctx.workspace
    config = workspace.load_config()
    if config.provider is not Provider.MINI:
        raise ApplyError(
            f"this build creates clusters only for provider mini, not {config.provider.value}",
            hint="use `constellation mini up` for a local cluster",
        )
    if workspace.state_path.exists() and workspace.load_state().cluster_id is not None:
        raise ApplyError(
            "the cluster in this workspace is already initialized",
            hint="use `constellation upgrade apply` to change its measurements",
        )
    if not config.attestation.measurements:
        raise ApplyError(
            "the configuration has no measurements; the node cannot be attested",
            hint="run `constellation config fetch-measurements` (mini up does this itself)",
        )
    record = MiniRecord.load(workspace)
    reporter = ctx.reporter
    endpoint = record.control_plane().init_endpoint
    with created_files_tracked(record):
        with reporter.step("initializing the first control-plane node"):
            result = initialize(workspace, config, endpoint, record, progress=reporter.info)
        with reporter.step("installing the KeyService, JoinService and VerificationServices"):
            install_services(workspace, config, record, result, progress=reporter.info)
    return result


@click.command(
    "apply",
    help="""Initialize the cluster: attest the first control-plane node, send it the master
secret, then install the KeyService, JoinService and VerificationServices.

The node must prove the configured measurements with PCR 15 still zero before anything secret
is sent. The master secret and the measurement salt are saved (0600) before they leave this
machine, so that `apply` run again after the node stopped answering repeats the same Init
(then PCR 15 may also carry exactly this cluster's mark) and the node completes it.

\b
Exit codes:
  0  the cluster is initialized and its services run
  1  the node refused or failed the init, or another step failed (the message says which)
  2  usage error
  3  the node stopped answering during init (crashed or rebooted): run `apply` again

\b
Examples:
  constellation apply
  constellation -C ./cluster apply -o json
""",
)
@output_option
def apply_command(output_format: str) -> None:
    import base64

    ctx = current()
    result = run_apply(ctx)
    cluster_id = base64.b64encode(result.cluster_id).decode()
    if output_format == OutputFormat.JSON:
        ctx.reporter.emit_json({"clusterID": cluster_id, "kubeconfig": str(result.kubeconfig)})
        return
    ctx.reporter.emit_text(f"Cluster ID: {cluster_id}")
    ctx.reporter.emit_text(f"Admin kubeconfig: {result.kubeconfig}")
