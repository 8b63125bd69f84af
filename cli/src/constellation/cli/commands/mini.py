"""``constellation mini``: a local attested cluster of processes with software TPMs.

``mini up`` in the workspace directory:

1. configuration: ``config generate mini`` when there is none (never a prompt);
2. the pinned Kubernetes binaries from the components cache (a clear error if missing);
3. the node image, its measurements signed with a fresh image-publisher key (whose public key
   goes into the configuration), loaded through the same verified path as
   ``config fetch-measurements``;
4. N nodes (swtpm, measured boot, bootstrapper), then ``apply`` (init over aTLS, services);
5. a bounded wait until every worker is a registered Node, then ``verify`` of every node.

Processes keep running; ``mini down`` ends them (by recorded PID and start time) and removes
every file mini mode created.
"""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from constellation.attestation.identity import Role
from constellation.attestation.nodelock import NodeLock
from constellation.bootstrapper.initsecret import InitSecret, hash_init_secret
from constellation.bootstrapper.joinclient import joinservice_measurements
from constellation.bootstrapper.metadata import Endpoint
from constellation.cli.config import Provider, default_config
from constellation.cli.context import CLIContext, current
from constellation.cli.mini import clusterobjects, image, services
from constellation.cli.mini.cluster import (
    INIT_COMPONENTS,
    JOIN_POLL_S,
    JOIN_TIMEOUT_S,
    KUBECONFIG_FILE,
    MINI_DIR,
    PUBLISHER_KEY_FILE,
    MiniRecord,
    component_hashes,
    created_files_tracked,
    down,
    exited_bootstrappers,
    kubernetes_binaries,
    reconcile_verification,
    save_init_secret,
    stop_cluster,
    wait_joined,
)
from constellation.cli.mini.errors import JoinTimeoutError, MiniError
from constellation.cli.mini.node import (
    LOOPBACK,
    MiniNode,
    free_port,
    launch_node,
    reboot_node,
    wait_booted,
)
from constellation.cli.mini.platform import load_or_create_platform_ca
from constellation.cli.mini.processes import is_running
from constellation.cli.mini.serviceaccount import joinservice_kubeconfig
from constellation.cli.nodeverify import (
    VerifyReport,
    build_validator,
    expected_measurements,
    fresh_nonce,
    judge,
    request_attestation_grpc,
)
from constellation.cli.output import OutputFormat, output_option
from constellation.cli.signedmeasurements import (
    MAX_MEASUREMENTS_SIZE,
    MAX_SIGNATURE_SIZE,
    fetch_bytes,
    resolve_public_key,
    verify_and_merge,
)
from constellation.cli.workspace import CONFIG_FILE

CONTROL_PLANE_PREFIX = "mini-cp-"
WORKER_PREFIX = "mini-worker-"
PUBLISHED_FILE = "measurements.json"
# A node name is a Kubernetes node name and a directory name: a DNS-1123 label, nothing else.
NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@click.group(
    "mini",
    help="""Create and remove a local attested cluster (processes, one swtpm vTPM per node).

\b
Examples:
  constellation mini up
  constellation mini node add --image ./image-v2
  constellation mini stop && constellation mini start && constellation recover
  constellation mini down
""",
)
def mini_group() -> None:
    pass


# -- up ----------------------------------------------------------------------------------------


def _prepare_config(ctx: CLIContext, record: MiniRecord) -> None:
    """Config (generated if missing), image, and its signed measurements, merged verified."""
    workspace = ctx.workspace
    if workspace.config_path.exists():
        config = workspace.load_config()
        if config.provider is not Provider.MINI:
            raise MiniError(
                f"{workspace.config_path} is for provider {config.provider.value}, not mini",
                hint="use an empty directory for a mini cluster",
            )
    else:
        config = default_config(Provider.MINI)
        ctx.reporter.info(f"No configuration found: writing a mini configuration to {CONFIG_FILE}")
    lock, installed = kubernetes_binaries(INIT_COMPONENTS)
    with ctx.reporter.step("building the node image"):
        built = image.build_image(
            record.image_dir,
            kubernetes_version=lock.kubernetes_version,
            components=component_hashes(installed),
        )
    platform_ca = load_or_create_platform_ca(record.platform_ca_dir)
    with ctx.reporter.step("measuring the image and signing its measurements"):
        public_pem = image.generate_publisher_key(record.publisher_key_path)
        published = image.publish_image(
            record.image_dir, image.load_publisher_key(record.publisher_key_path)
        )
        measurements_path = record.directory / PUBLISHED_FILE
        signature_path = image.write_published(published, measurements_path)
    config = config.model_copy(
        update={
            "image": built.version,
            "kubernetesVersion": lock.kubernetes_version,
            "attestation": config.attestation.model_copy(
                update={
                    "measurementServicePublicKey": public_pem.decode(),
                    "measurementServicePublicKeyPath": None,
                    "platformRoots": platform_ca.cert_pem.decode(),
                }
            ),
        }
    )
    # The same verified path as `config fetch-measurements`: read, verify signature, merge.
    data = fetch_bytes(str(measurements_path), max_size=MAX_MEASUREMENTS_SIZE, base=workspace.root)
    signature = fetch_bytes(str(signature_path), max_size=MAX_SIGNATURE_SIZE, base=workspace.root)
    key = resolve_public_key(config, override=None, base=workspace.root)
    merged = verify_and_merge(config, data, signature, key)
    workspace.save_config(merged.config, overwrite=True)
    record.image_version = built.version
    record.joinservice_measurements = joinservice_measurements(merged.measurements)
    record.save()


def _launch(
    record: MiniRecord, name: str, role: Role, image_dir: Path, init_hash: bytes
) -> MiniNode:
    config = image.image_config(image_dir)
    records: list[Any] = []
    try:
        node = launch_node(
            name=name,
            role=role,
            directory=record.nodes_dir / name,
            image_source=image_dir,
            image_version=config.version,
            init_secret_hash=init_hash,
            joinservice_endpoint=Endpoint(LOOPBACK, record.joinservice_port),
            joinservice_measurements=record.joinservice_measurements,
            platform_ca=load_or_create_platform_ca(record.platform_ca_dir),
            logs_dir=record.logs_dir,
            records=records,
        )
    finally:
        for process in records:
            record.record_process(process)
    record.nodes.append(node)
    record.save()
    return node


def verify_nodes(ctx: CLIContext, record: MiniRecord) -> list[VerifyReport]:
    """``verify`` every node through its VerificationService (the verify command's core)."""
    config = ctx.workspace.load_config()
    state = ctx.workspace.load_state()
    if state.cluster_id is None:
        raise MiniError("the cluster is not initialized", hint="run `constellation apply`")
    measurements = expected_measurements(config.attestation.parsed_measurements(), state.cluster_id)
    validator = build_validator(
        config.attestation.variant, measurements, config.attestation.parsed_platform_roots()
    )
    reports = []
    for endpoint in record.verification:
        nonce = fresh_nonce()
        document = request_attestation_grpc(endpoint.grpc, nonce)
        reports.append(
            judge(
                validator,
                measurements,
                document,
                nonce,
                endpoint=f"{endpoint.node} ({endpoint.grpc})",
                cluster_id=state.cluster_id,
            )
        )
    return reports


def _registered(record: MiniRecord) -> set[str]:
    core = clusterobjects.core_api(kubeconfig_path_of(record))
    return set(clusterobjects.registered_nodes(core))


def kubeconfig_path_of(record: MiniRecord) -> Path:
    return record.root / KUBECONFIG_FILE


def mini_up(ctx: CLIContext, workers: int) -> dict[str, Any]:
    from constellation.cli.commands.apply import run_apply

    workspace = ctx.workspace
    workspace.ensure_root()
    if MiniRecord.exists(workspace):
        raise MiniError(
            f"a mini cluster already exists in {workspace.root}",
            hint="use it (`constellation verify`), or remove it with `constellation mini down`",
        )
    kubernetes_binaries(INIT_COMPONENTS)  # fail before creating anything
    record = MiniRecord(root=workspace.root.resolve())
    record.directory.mkdir(mode=0o700)
    record.save()
    with created_files_tracked(record):
        _prepare_config(ctx, record)
        secret = InitSecret.generate()
        save_init_secret(record, secret)
        init_hash = hash_init_secret(secret)
        record.joinservice_port = free_port()
        record.save()
        names = [(f"{CONTROL_PLANE_PREFIX}0", Role.CONTROL_PLANE)] + [
            (f"{WORKER_PREFIX}{i}", Role.WORKER) for i in range(workers)
        ]
        with ctx.reporter.step(f"booting {len(names)} nodes (swtpm, measured boot, bootstrapper)"):
            nodes = [_launch(record, n, r, record.image_dir, init_hash) for n, r in names]
            for node in nodes:
                wait_booted(node)
    result = run_apply(ctx)
    record = MiniRecord.load(workspace)
    worker_names = {n for n, r in names if r is Role.WORKER}
    with ctx.reporter.step(f"waiting for {len(worker_names)} worker(s) to join"):
        wait_joined(
            lambda: _registered(record),
            worker_names,
            alive=lambda: exited_bootstrappers(record, worker_names),
        )
    with ctx.reporter.step("verifying every node"):
        reports = verify_nodes(ctx, record)
    return _summary(record, result.cluster_id, reports)


def _summary(record: MiniRecord, cluster_id: bytes, reports: list[VerifyReport]) -> dict[str, Any]:
    registered = _registered(record)
    by_node = {r.endpoint.split(" ", 1)[0]: r for r in reports}
    verification = {v.node: v for v in record.verification}
    return {
        "clusterID": base64.b64encode(cluster_id).decode(),
        "kubeconfig": str(kubeconfig_path_of(record)),
        "joinService": f"{LOOPBACK}:{record.joinservice_port}",
        "nodes": [
            {
                "name": node.name,
                "role": node.role.value,
                "image": node.image_version,
                "registered": node.name in registered,
                "verified": by_node[node.name].verified if node.name in by_node else None,
                "verifyEndpoint": str(verification[node.name].grpc)
                if node.name in verification
                else None,
            }
            for node in record.nodes
        ],
    }


def _print_summary(ctx: CLIContext, summary: dict[str, Any]) -> None:
    ctx.reporter.emit_text(f"Cluster ID: {summary['clusterID']}")
    table = Table("Node", "Role", "Image", "Registered", "Verified", "Verification endpoint")
    for node in summary["nodes"]:
        verified = node["verified"]
        table.add_row(
            node["name"],
            node["role"],
            node["image"],
            "yes" if node["registered"] else "no",
            "-" if verified is None else ("yes" if verified else "NO"),
            node["verifyEndpoint"] or "-",
        )
    ctx.reporter.data.print(table)
    ctx.reporter.emit_text(f"Admin kubeconfig: {summary['kubeconfig']}")


@mini_group.command(
    "up",
    help="""Create a local attested cluster in the workspace and verify every node.

Generates the configuration if there is none, builds and measures the node image, signs its
measurements, boots the nodes (one swtpm each, measured boot), initializes the cluster, waits
until every worker joined, and verifies every node. Nodes show NotReady in Kubernetes: no
kubelet runs in mini mode, and the state disks' data path is not encrypted (LUKS2 headers only).

\b
Examples:
  constellation mini up
  constellation -C ./cluster mini up --workers 5 -o json
""",
)
@click.option(
    "--control-planes",
    type=click.IntRange(1, 1),
    default=1,
    show_default=True,
    help="Control-plane nodes (mini mode runs exactly one).",
)
@click.option(
    "--workers", type=click.IntRange(0, 16), default=2, show_default=True, help="Worker nodes."
)
@output_option
@click.pass_context
def up_command(
    click_ctx: click.Context, control_planes: int, workers: int, output_format: str
) -> None:
    ctx = current()
    try:
        summary = mini_up(ctx, workers)
    except MiniError as err:
        if MiniRecord.exists(ctx.workspace):
            err.hint = (err.hint + "; " if err.hint else "") + (
                "logs are in mini/logs/; `constellation mini down` removes what was created"
            )
        raise
    if output_format == OutputFormat.JSON:
        ctx.reporter.emit_json(summary)
    else:
        _print_summary(ctx, summary)
    if not all(node["verified"] for node in summary["nodes"]):
        ctx.reporter.info("Error: not every node verified; see the table above")
        click_ctx.exit(1)


# -- down --------------------------------------------------------------------------------------


def run_down(ctx: CLIContext) -> dict[str, Any]:
    with ctx.reporter.step("stopping the mini cluster and removing its files"):
        report = down(ctx.workspace, progress=ctx.reporter.debug)
    return {"stopped": list(report.stopped), "removed": list(report.removed)}


@mini_group.command(
    "down",
    help="""Stop every process of the mini cluster and remove every file mini mode created.

Only processes recorded by `mini up` (PID and start time still matching) are stopped; a
configuration written before `mini up` is kept. Running it again does nothing.

\b
Examples:
  constellation mini down
""",
)
@output_option
def down_command(output_format: str) -> None:
    ctx = current()
    result = run_down(ctx)
    if output_format == OutputFormat.JSON:
        ctx.reporter.emit_json(result)
        return
    if not result["stopped"] and not result["removed"]:
        ctx.reporter.emit_text("No mini cluster in this workspace; nothing to do.")
        return
    ctx.reporter.emit_text(
        f"Stopped {len(result['stopped'])} process(es), removed {', '.join(result['removed'])}."
    )


# -- stop / start (a full-cluster shutdown and reboot) -----------------------------------------


@mini_group.command(
    "stop",
    help="""Stop every process of the mini cluster and keep all its files (a full shutdown).

Nodes keep their state disks, node state, control-plane data and vTPM state. Boot them again
with `constellation mini start`, then give the control plane its keys with
`constellation recover`.

\b
Examples:
  constellation mini stop
""",
)
@output_option
def stop_command(output_format: str) -> None:
    ctx = current()
    with ctx.reporter.step("stopping every process of the mini cluster"):
        stopped = stop_cluster(ctx.workspace, progress=ctx.reporter.debug)
    if output_format == OutputFormat.JSON:
        ctx.reporter.emit_json({"stopped": list(stopped)})
        return
    ctx.reporter.emit_text(
        f"Stopped {len(stopped)} process(es); the files are kept. "
        "Next: `constellation mini start`, then `constellation recover`."
    )


def mini_start(ctx: CLIContext) -> dict[str, Any]:
    """Reboot every node (swtpm with PCRs reset, firmware step, bootstrapper).

    Returns once the control-plane node waits for ``constellation recover`` on its init port;
    the services start after the recovery (:func:`resume_services`).
    """
    record = MiniRecord.load(ctx.workspace)
    running = sorted(p.name for p in record.processes if is_running(p))
    if running:
        raise MiniError(
            f"the mini cluster is running ({', '.join(running)})",
            hint="stop it first with `constellation mini stop`",
        )
    records: list[Any] = []
    with ctx.reporter.step(f"booting {len(record.nodes)} nodes again (PCRs reset)"):
        try:
            for index, node in enumerate(record.nodes):
                record.nodes[index] = reboot_node(node, record.logs_dir, records)
        finally:
            for process in records:
                record.record_process(process)
            record.save()
    control_plane = record.control_plane()
    with ctx.reporter.step(f"waiting for {control_plane.name} to wait for recovery"):
        wait_booted(control_plane)
    return {
        "nodes": [n.name for n in record.nodes],
        "recoverEndpoint": str(control_plane.init_endpoint),
    }


@mini_group.command(
    "start",
    help="""Boot a stopped mini cluster again, as after a power cycle.

Each node's vTPM restarts (PCRs reset), its firmware step measures the image again, and its
bootstrapper starts. The control-plane node finds no JoinService and waits for
`constellation recover`, which also starts the services again.

\b
Examples:
  constellation mini start && constellation recover
""",
)
@output_option
def start_command(output_format: str) -> None:
    ctx = current()
    result = mini_start(ctx)
    if output_format == OutputFormat.JSON:
        ctx.reporter.emit_json(result)
        return
    ctx.reporter.emit_text(
        f"Booted {len(result['nodes'])} node(s); the control plane waits for recovery at "
        f"{result['recoverEndpoint']}. Next: `constellation recover`."
    )


def resume_services(ctx: CLIContext, record: MiniRecord) -> None:
    """After a recovery: start the KeyService, JoinService and VerificationServices again.

    They run from the files ``apply`` materialized (the cluster objects are in etcd, which the
    control plane kept), then every worker rejoins through the JoinService; the wait for that
    is bounded and ends early when a worker's bootstrapper exited.
    """
    from dataclasses import replace

    from constellation.cli.commands.apply import api_server_endpoint, start_verification

    workspace = ctx.workspace
    kubeconfig = kubeconfig_path_of(record)
    files = clusterobjects.MountedFiles(
        record.services_dir / "keyservice", record.services_dir / "joinservice"
    )
    keyservice, keyservice_port = services.start_keyservice(files, record.logs_dir)
    record.record_process(keyservice)
    record.keyservice_port = keyservice_port
    joinservice = services.start_joinservice(
        files,
        port=record.joinservice_port,
        keyservice_port=keyservice_port,
        kubeconfig=joinservice_kubeconfig(kubeconfig, record.services_dir),
        api_server_endpoint=api_server_endpoint(kubeconfig),
        node=record.control_plane(),
        logs_dir=record.logs_dir,
    )
    record.record_process(joinservice)
    services.wait_serving(keyservice, keyservice_port)
    services.wait_serving(joinservice, record.joinservice_port)
    record.joinservice_running = True
    record.verification = []
    record.save()
    # The old verification endpoints are gone; each node gets its new one in the state file.
    workspace.save_state(replace(workspace.load_state(), verify_endpoint=None, nodes=()))
    for node in record.nodes:
        start_verification(workspace, record, node.name, progress=ctx.reporter.debug)
    workers = [n for n in record.nodes if n.role is Role.WORKER]
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for worker in workers:
        while not NodeLock(worker.tcti).is_initialized():
            if not is_running(worker.supervisor):
                raise JoinTimeoutError(
                    f"node {worker.name} stopped before it rejoined",
                    hint=f"see its logs {record.logs_dir}/{worker.name}-*.log",
                )
            if time.monotonic() >= deadline:
                raise JoinTimeoutError(
                    f"node {worker.name} did not rejoin within {JOIN_TIMEOUT_S:.0f}s",
                    hint="see mini/logs/joinservice.log and the node's bootstrapper log",
                )
            time.sleep(JOIN_POLL_S)
    # A worker that joined late (after `mini node add` stopped waiting) gets its service too.
    reconcile_verification(workspace, record, _registered(record), progress=ctx.reporter.debug)


# -- node add ----------------------------------------------------------------------------------


@mini_group.group(
    "node",
    help="""Add nodes to a running mini cluster.

\b
Examples:
  constellation mini node add --name extra
""",
)
def node_group() -> None:
    pass


def _next_worker_name(record: MiniRecord) -> str:
    taken = {n.name for n in record.nodes}
    index = 0
    while f"{WORKER_PREFIX}{index}" in taken:
        index += 1
    return f"{WORKER_PREFIX}{index}"


def add_node(
    ctx: CLIContext, image_dir: Path | None, name: str | None, timeout: float
) -> dict[str, Any]:
    from constellation.cli.commands.apply import start_verification
    from constellation.cli.inventory import registered_nodes
    from constellation.cli.mini.refusals import refusals_since

    workspace = ctx.workspace
    record = MiniRecord.load(workspace)
    if not record.joinservice_running:
        raise MiniError("the cluster is not initialized", hint="run `constellation apply` first")
    name = name or _next_worker_name(record)
    if not NODE_NAME.fullmatch(name):
        raise click.BadParameter(
            "a node name is a DNS label: lowercase letters, digits and '-', at most 63",
            param_hint="--name",
        )
    if any(n.name == name for n in record.nodes):
        raise MiniError(f"a node named {name!r} exists already", hint="choose another --name")
    source = image_dir or record.image_dir
    secret_hash = hash_init_secret(InitSecret.generate())  # a worker is never initialized
    log_offset = refusals_offset(record)
    with ctx.reporter.step(f"booting {name} from {source}"):
        node = _launch(record, name, Role.WORKER, source, secret_hash)
        wait_booted(node)
    joined, reason = True, None
    failures: list[dict[str, Any]] = []
    kubeconfig = kubeconfig_path_of(record)
    try:
        # An API server that is briefly away is asked again until the timeout (wait_joined);
        # only the node's bootstrapper exiting, or a definitive API answer, ends it early.
        with ctx.reporter.step(f"waiting for {name} to join (at most {timeout:.0f}s)"):
            wait_joined(
                lambda: set(registered_nodes(kubeconfig)),
                {name},
                timeout=timeout,
                alive=lambda: exited_bootstrappers(record, {name}),
            )
    except JoinTimeoutError as err:
        joined, reason = False, str(err)
        failures = refusals_since(record.logs_dir / "joinservice.log", log_offset)
    late = _reconcile_late_joiners(ctx, record, kubeconfig)
    if joined and name not in late and not any(v.node == name for v in record.verification):
        start_verification(workspace, record, name, progress=ctx.reporter.debug)
    return {
        "node": name,
        "image": node.image_version,
        "joined": joined,
        "reason": reason,
        "refusals": failures,
    }


def _reconcile_late_joiners(ctx: CLIContext, record: MiniRecord, kubeconfig: Path) -> list[str]:
    """Start the VerificationService of every registered node that has none (a late joiner:
    a node that became a Node after an earlier ``mini node add`` stopped waiting for it).

    Best effort: with the API server away the registered set is unknown and nothing is started;
    ``verify --all`` and ``status`` then report those nodes as not checked, with the reason.
    """
    from constellation.cli.errors import KubernetesAPIError
    from constellation.cli.inventory import registered_nodes
    from constellation.cli.mini.cluster import reconcile_verification

    try:
        registered = set(registered_nodes(kubeconfig))
    except KubernetesAPIError as err:
        ctx.reporter.debug(f"late joiners not reconciled: {err}")
        return []
    started = reconcile_verification(ctx.workspace, record, registered, progress=ctx.reporter.debug)
    for late in started:
        ctx.reporter.info(f"Started the VerificationService of {late} (it joined late).")
    return started


def refusals_offset(record: MiniRecord) -> int:
    path = record.logs_dir / "joinservice.log"
    return path.stat().st_size if path.exists() else 0


@node_group.command(
    "add",
    help="""Boot one more worker from an image and report whether the cluster admitted it.

The node gets its own swtpm and measured boot of its own copy of IMAGE (default: the image
`mini up` built). If the JoinService refuses it, the rejection report names the failed checks
(for a modified image: the PCRs that differ). Exit 1 if the node did not join.

The wait ends early only on a definitive answer (the node's bootstrapper exited, or the API
server refused the CLI's request); an API server that is briefly unavailable (refused, timed
out, 5xx) is asked again with backoff until --timeout.

\b
Examples:
  constellation mini node add
  constellation mini node add --image ./my-image --name tampered -o json
""",
)
@click.option("--image", "image_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--name", help="Node name (default: the next free mini-worker-N).")
@click.option(
    "--timeout",
    type=click.FloatRange(1, 900),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the node to join.",
)
@output_option
@click.pass_context
def node_add_command(
    click_ctx: click.Context,
    image_dir: Path | None,
    name: str | None,
    timeout: float,
    output_format: str,
) -> None:
    ctx = current()
    result = add_node(ctx, image_dir, name, timeout)
    if output_format == OutputFormat.JSON:
        ctx.reporter.emit_json(result)
    elif result["joined"]:
        ctx.reporter.emit_text(
            f"Node {result['node']} (image {result['image']}) joined the cluster."
        )
    else:
        ctx.reporter.emit_text(f"Node {result['node']} (image {result['image']}) was NOT admitted.")
        ctx.reporter.emit_text(f"Why: {result['reason']}")
        for refusal in result["refusals"]:
            ctx.reporter.emit_text(f"JoinService refused a node: {refusal['report']}")
            for failure in refusal["failures"]:
                ctx.reporter.emit_text(
                    f"  {failure['check']}: expected {failure['expected']}, got {failure['actual']}"
                )
    if not result["joined"]:
        click_ctx.exit(1)


# -- image -------------------------------------------------------------------------------------


@mini_group.group(
    "image",
    help="""Build and measure node images, as an image publisher does.

\b
Examples:
  constellation mini image build ./image-v2 --version mini-v2
  constellation mini image measure ./image-v2 --sign --out v2.json
""",
)
def image_group() -> None:
    pass


@image_group.command(
    "build",
    help="""Build a node image in DIR from the installed node packages.

Edit files in DIR afterwards to make a modified image; `mini image measure DIR --sign`
then publishes its measurements.

\b
Examples:
  constellation mini image build ./image-v2
  constellation mini image build ./image-v2 --version mini-v2
""",
)
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--version", help="Image version (default: derived from the code).")
@output_option
def image_build_command(directory: Path, version: str | None, output_format: str) -> None:
    ctx = current()
    lock, installed = kubernetes_binaries(INIT_COMPONENTS)
    built = image.build_image(
        directory,
        kubernetes_version=lock.kubernetes_version,
        components=component_hashes(installed),
        version=version,
    )
    if output_format == OutputFormat.JSON:
        ctx.reporter.emit_json({"directory": str(directory), **image.describe(built)})
        return
    ctx.reporter.emit_text(f"Built node image {built.version} in {directory}")


@image_group.command(
    "measure",
    help="""Compute the PCRs a node booted from DIR will have; with --sign, publish them.

Writes the published measurements ({version, ref, stream, list}) to --out and, with --sign,
the detached signature (cosign blob format) to <out>.sig, signed with the workspace's
image-publisher key (default: the one `mini up` generated).

\b
Examples:
  constellation mini image measure ./image-v2
  constellation mini image measure ./image-v2 --sign --out v2.json
""",
)
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--sign", is_flag=True, help="Sign the measurements.")
@click.option(
    "--key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Image-publisher private key (default: the workspace's).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("measurements.json"),
    show_default=True,
)
@output_option
def image_measure_command(
    directory: Path, sign: bool, key: Path | None, out: Path, output_format: str
) -> None:
    ctx = current()
    contents = image.read_image(directory)
    config = image.parse_image_config(contents.config)
    measurements = image.measurements_for(contents)
    result: dict[str, Any] = {
        "version": config.version,
        "measurements": measurements.to_dict(),
    }
    if sign:
        key_path = key or (ctx.workspace.root / MINI_DIR / PUBLISHER_KEY_FILE)
        published = image.publish(config.version, measurements, image.load_publisher_key(key_path))
        signature = image.write_published(published, out)
        result.update({"file": str(out), "signature": str(signature)})
    if output_format == OutputFormat.JSON:
        ctx.reporter.emit_json(result)
        return
    ctx.reporter.emit_text(f"Image {config.version}:")
    for index, measurement in measurements.items():
        ctx.reporter.emit_text(f"  PCR {index:2d}: {measurement.expected.hex()}")
    if sign:
        ctx.reporter.emit_text(f"Signed measurements: {out} (signature {result['signature']})")
