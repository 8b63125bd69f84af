"""``constellation recover``: give a control-plane node its keys back after a full shutdown.

After every node of a cluster went down, no JoinService runs that could hand out rejoin
tickets; an initialized control-plane node then waits with ``recoverproto.API`` on its init
port (DESIGN.md §2 step 6). The order, and why:

1. The node is attested over aTLS against the configured measurements with PCR 15 enforced as
   the mark of **this** workspace's cluster ID (``pcr15_for_cluster_id``). A node of another
   cluster (or a fresh one) fails this check, and the channel is never handed out: the master
   secret is not sent to it.
2. Only then ``Recover{master_secret, master_salt}`` is sent. The node checks that the key it
   derives opens its state disk and reproduces its cluster ID, re-marks PCR 15 and restarts its
   control plane before it answers with its disk UUID.
"""

from __future__ import annotations

from collections.abc import Sequence

import click
import grpc
from cryptography import x509

from constellation.attestation import atls
from constellation.attestation.evidence import Validator
from constellation.attestation.identity import Role
from constellation.attestation.identity.policy import RequireRole
from constellation.attestation.measurements import Measurements
from constellation.bootstrapper.errors import MetadataError
from constellation.bootstrapper.metadata import Endpoint
from constellation.cli.context import current
from constellation.cli.errors import CLIError, WorkspaceError
from constellation.cli.nodeverify import build_validator, expected_measurements
from constellation.cli.output import OutputFormat, output_option
from constellation.cli.workspace import MasterSecret
from constellation.proto import recover_pb2, recover_pb2_grpc

ATTEST_TIMEOUT_S = 60.0
# The node restarts its control plane before it answers.
RECOVER_TIMEOUT_S = 300.0


class RecoverError(CLIError):
    """The node could not be recovered (unreachable, refused the secret, failed)."""


def recover_validator(
    variant: str,
    configured: Measurements,
    cluster_id: bytes,
    platform_roots: Sequence[x509.Certificate] = (),
) -> Validator:
    """The image's measurements with PCR 15 = the mark of ``cluster_id``, a replaying event
    log, and a control-plane platform identity (the master secret goes to no other node)."""
    expected = expected_measurements(configured, cluster_id)
    return RequireRole(
        build_validator(variant, expected, platform_roots),
        Role.CONTROL_PLANE,
        why="recovery (and the master secret) only go to a control-plane node",
    )


def recover_node(
    endpoint: Endpoint,
    validator: Validator,
    master: MasterSecret,
    *,
    attest_timeout: float = ATTEST_TIMEOUT_S,
    timeout: float = RECOVER_TIMEOUT_S,
) -> str:
    """Attest the node, then send the master secret; returns the node's disk UUID.

    ``atls.connect`` raises (an ``AttestationError`` listing every failed check) before any
    request is sent if the node is not the expected image of this cluster.
    """
    with atls.connect(str(endpoint), [validator], timeout=attest_timeout) as channel:
        request = recover_pb2.RecoverMessage(master_secret=master.key, master_salt=master.salt)
        try:
            response = recover_pb2_grpc.APIStub(channel.channel).Recover(request, timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            details = exc.details() if isinstance(exc, grpc.Call) else ""
            raise RecoverError(
                f"the node at {endpoint} refused recovery: "
                f"{getattr(code, 'name', code)}: {details}",
                hint=_HINTS.get(code, "see the node's bootstrapper log")
                if code is not None
                else "see the node's bootstrapper log",
            ) from None
    return str(response.disk_uuid)


_HINTS = {
    grpc.StatusCode.PERMISSION_DENIED: "this workspace's master secret is not the one of the "
    "node's cluster; run recover from the cluster's workspace",
    grpc.StatusCode.FAILED_PRECONDITION: "the node is recovered already; run "
    "`constellation verify`",
    grpc.StatusCode.UNIMPLEMENTED: "the node does not wait for recovery (it rejoined or is "
    "not initialized)",
}


@click.command(
    "recover",
    help="""Recover a control-plane node after a full-cluster shutdown.

Attests the node (the state's control-plane endpoint, or -e) against the configured
measurements with PCR 15 = this cluster's value (a node of another cluster is refused before
anything is sent), then sends the master secret of this workspace. The node unlocks its
state disk, re-marks PCR 15 and restarts its control plane.

\b
In a mini cluster after `mini start`, the services are started again afterwards and the
command waits until every worker rejoined.

\b
Examples:
  constellation recover
  constellation recover -e 127.0.0.1:9000 -o json
""",
)
@click.option("-e", "--endpoint", help="host:port of the node's recovery server (default: state).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1, max=3600),
    default=RECOVER_TIMEOUT_S,
    show_default=True,
    help="Seconds to wait for the node to restart its control plane.",
)
@output_option
def recover_command(endpoint: str | None, timeout: float, output_format: str) -> None:
    ctx = current()
    config = ctx.workspace.load_config()
    state = ctx.workspace.load_state()
    if state.cluster_id is None:
        raise WorkspaceError(
            "the state file has no cluster ID (the cluster was never initialized)",
            hint="there is nothing to recover; run `constellation apply`",
        )
    if endpoint is not None:
        try:
            target = Endpoint.parse(endpoint, where="--endpoint")
        except MetadataError as err:
            raise click.BadParameter(str(err)) from None
    elif state.init_endpoint is not None:
        target = state.init_endpoint
    else:
        raise WorkspaceError(
            "the state file names no control-plane endpoint", hint="pass -e/--endpoint host:port"
        )
    master = ctx.workspace.load_master_secret()
    validator = recover_validator(
        config.attestation.variant,
        config.attestation.parsed_measurements(),
        state.cluster_id,
        config.attestation.parsed_platform_roots(),
    )
    with ctx.reporter.step(f"attesting {target} and sending the master secret"):
        disk_uuid = recover_node(target, validator, master, timeout=timeout)
    services_resumed = _resume_mini_services()
    if output_format == OutputFormat.JSON:
        ctx.reporter.emit_json(
            {
                "endpoint": str(target),
                "diskUUID": disk_uuid,
                "recovered": True,
                "servicesResumed": services_resumed,
            }
        )
        return
    ctx.reporter.emit_text(
        f"Recovered the node at {target} (state disk {disk_uuid}); its control plane is back."
    )
    if services_resumed:
        ctx.reporter.emit_text("The mini cluster's services run again and every node rejoined.")


def _resume_mini_services() -> bool:
    """In a mini cluster after ``mini start``, the services start once the control plane is back.

    On a real cluster they are pods the restarted control plane schedules itself.
    """
    from constellation.cli.commands.mini import resume_services
    from constellation.cli.mini.cluster import MiniRecord

    ctx = current()
    if not MiniRecord.exists(ctx.workspace):
        return False
    record = MiniRecord.load(ctx.workspace)
    if record.joinservice_running:
        return False
    with ctx.reporter.step("starting the services again and waiting for the workers to rejoin"):
        resume_services(ctx, record)
    return True
