"""``constellation verify``: check that a running node is still the node the admin trusts.

``verify --all`` enumerates every node there is (:mod:`constellation.cli.inventory`: the
registered Nodes and the workspace's nodes) and gives each a row, so a node that could not be
checked is reported with its reason instead of dropping out of the count.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass

import click
from rich.table import Table

from constellation.attestation.errors import ValidationError
from constellation.attestation.evidence import Validator
from constellation.attestation.measurements import Measurements
from constellation.bootstrapper.errors import MetadataError
from constellation.bootstrapper.metadata import Endpoint
from constellation.cli.context import CLIContext, current
from constellation.cli.errors import VerifyError, WorkspaceError
from constellation.cli.inventory import KnownNode, load_inventory
from constellation.cli.nodeverify import (
    REQUEST_TIMEOUT_SECONDS,
    CheckOutcome,
    NodeCheck,
    VerifyReport,
    bind_to_node,
    build_validator,
    expected_measurements,
    fresh_nonce,
    judge,
    request_attestation_grpc,
    request_attestation_http,
)
from constellation.cli.output import OutputFormat, output_option
from constellation.cli.workspace import ClusterState

EXIT_INCOMPLETE = 3


@click.command(
    "verify",
    help="""Verify a node's attestation against the configured measurements.

Sends a fresh 32-byte nonce to the node's verification service and checks the returned
evidence; PCR 15 must hold the value derived from the cluster ID. Exits 1 and lists every
failed check when the node is not trusted.

With --all, every node there is gets a row: the Nodes registered in the Kubernetes API server
and the nodes the workspace knows (state file, mini record). Each is verified (with the
platform identity its evidence proves, which must carry the node's name), refused (with the
failed checks), or not checked, with the reason: not registered in Kubernetes, no
verification endpoint known, endpoint unreachable. If the API server cannot be asked, the
registered Nodes are unknown and that is said too.

\b
Exit codes:
  0  every node asked for was verified
  1  a node is not trusted (the failed checks are listed), or an error
  2  usage error
  3  (--all) no node was refused, but not every node could be checked

\b
Examples:
  constellation verify
  constellation verify -e 127.0.0.1:30081 --cluster-id <base64> -o json
  constellation verify --node-endpoint mini-worker-0
  constellation verify --all -o json
  constellation verify --protocol http -e 127.0.0.1:30080
""",
)
@click.option("-e", "--endpoint", help="host:port of the verification service (default: state).")
@click.option(
    "--node-endpoint",
    help="Verify this node instead: a node name from the state file or host:port.",
)
@click.option(
    "--all",
    "all_nodes",
    is_flag=True,
    help="Verify every registered and every known node, each with its own fresh nonce.",
)
@click.option("--cluster-id", help="Cluster ID (base64) to expect in PCR 15 (default: state).")
@click.option(
    "--protocol",
    type=click.Choice(["grpc", "http"]),
    default="grpc",
    show_default=True,
    help="How to reach the verification service.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1, max=300),
    default=REQUEST_TIMEOUT_SECONDS,
    show_default=True,
    help="Seconds to wait for the node's answer.",
)
@output_option
@click.pass_context
def verify_command(
    click_ctx: click.Context,
    endpoint: str | None,
    node_endpoint: str | None,
    all_nodes: bool,
    cluster_id: str | None,
    protocol: str,
    timeout: float,
    output_format: str,
) -> None:
    ctx = current()
    config = ctx.workspace.load_config()
    if all_nodes and (endpoint is not None or node_endpoint is not None):
        raise click.UsageError("--all verifies every node; drop -e/--node-endpoint")
    state = _state_if_needed(ctx, endpoint, node_endpoint, cluster_id, all_nodes=all_nodes)
    target = None if all_nodes else _target(state, endpoint, node_endpoint)
    expected_id = _cluster_id(state, cluster_id)
    measurements = expected_measurements(config.attestation.parsed_measurements(), expected_id)
    validator = build_validator(
        config.attestation.variant, measurements, config.attestation.parsed_platform_roots()
    )
    request = request_attestation_grpc if protocol == "grpc" else request_attestation_http
    asker = _Asker(ctx, validator, measurements, expected_id, request, protocol, timeout)
    if all_nodes:
        click_ctx.exit(_verify_all(ctx, asker, _required(state), output_format))
    assert target is not None
    report = asker.ask(target)
    if output_format == OutputFormat.JSON:
        ctx.reporter.emit_json(report.to_dict())
    else:
        _print_report(ctx, report)
    for warning in report.warnings:
        ctx.reporter.warning(str(warning))
    if not report.verified:
        _explain_untrusted(ctx, [report])
        click_ctx.exit(1)


@dataclass(frozen=True)
class _Asker:
    """Everything one attestation request needs; each call draws its own nonce."""

    ctx: CLIContext
    validator: Validator
    measurements: Measurements
    cluster_id: bytes
    request: Callable[..., bytes]
    protocol: str
    timeout: float

    def ask(self, target: Endpoint, *, label: str | None = None) -> VerifyReport:
        # One fresh nonce per node: evidence from one node can never answer for another.
        nonce = fresh_nonce()
        reporter = self.ctx.reporter
        reporter.debug(f"nonce {nonce.hex()} (fresh), expecting PCR 15 for the cluster ID")
        with reporter.step(f"requesting attestation from {label or target} ({self.protocol})"):
            document = self.request(target, nonce, timeout=self.timeout)
        reporter.debug(f"received a {len(document)}-byte attestation document")
        return judge(
            self.validator,
            self.measurements,
            document,
            nonce,
            endpoint=str(target),
            cluster_id=self.cluster_id,
        )


def check_node(asker: _Asker, known: KnownNode) -> NodeCheck:
    """The row of one node: asked if it can be, else the reason it could not be checked."""
    endpoint = known.verify_endpoint
    shown = None if endpoint is None else str(endpoint)

    def not_checked(reason: str) -> NodeCheck:
        return NodeCheck(known.name, known.registered, shown, CheckOutcome.NOT_CHECKED, reason)

    if known.registered is False:
        return not_checked("not registered in Kubernetes (the API server lists no such Node)")
    if endpoint is None:
        if not known.in_workspace:
            return not_checked(
                "no verification endpoint known: a registered Node the workspace does not know"
            )
        return not_checked("no verification endpoint known for this node")
    try:
        report = asker.ask(endpoint, label=f"{known.name} at {endpoint}")
    except VerifyError as err:
        return not_checked(f"endpoint unreachable: {err}")
    report = bind_to_node(report, known.name)
    outcome = CheckOutcome.VERIFIED if report.verified else CheckOutcome.REFUSED
    return NodeCheck(known.name, known.registered, shown, outcome, report=report)


def _verify_all(ctx: CLIContext, asker: _Asker, state: ClusterState, output_format: str) -> int:
    inventory = load_inventory(ctx.workspace, state)
    if not inventory.nodes and inventory.registered_known:
        raise WorkspaceError(
            "neither the workspace nor the Kubernetes API server lists a node",
            hint="verify single nodes with -e/--endpoint host:port",
        )
    checks = [check_node(asker, known) for known in inventory.nodes]
    counts = {outcome: 0 for outcome in CheckOutcome}
    for check in checks:
        counts[check.outcome] += 1
    unknown = inventory.registered_error
    complete = counts[CheckOutcome.VERIFIED] == len(checks) and unknown is None
    summary = f"Verified {counts[CheckOutcome.VERIFIED]} of {len(checks)} nodes" + (
        "" if unknown is None else " the workspace knows; the registered Nodes are unknown"
    )
    if output_format == OutputFormat.JSON:
        ctx.reporter.emit_json(
            {
                "clusterID": base64.b64encode(asker.cluster_id).decode(),
                "verified": complete,
                "summary": {
                    "verified": counts[CheckOutcome.VERIFIED],
                    "refused": counts[CheckOutcome.REFUSED],
                    "notChecked": counts[CheckOutcome.NOT_CHECKED],
                    "total": len(checks),
                },
                "registeredNodes": {
                    "known": unknown is None,
                    "reason": None if unknown is None else str(unknown),
                },
                "nodes": [check.to_dict() for check in checks],
            }
        )
    else:
        for check in checks:
            if check.report is not None:
                _print_report(ctx, check.report, name=check.name)
        _print_rows(ctx, checks)
        if unknown is not None:
            ctx.reporter.emit_text(f"Registered Nodes unknown: {unknown}")
        ctx.reporter.emit_text(summary + ".")
    for check in checks:
        for warning in check.report.warnings if check.report is not None else ():
            ctx.reporter.warning(f"{check.name}: {warning}")
    refused = [c.report for c in checks if c.report is not None and not c.report.verified]
    if refused:
        _explain_untrusted(ctx, refused)
        return 1
    if not complete:
        missing = [
            f"{c.name} ({c.reason})" for c in checks if c.outcome is CheckOutcome.NOT_CHECKED
        ]
        if unknown is not None:
            missing.append(f"the registered Nodes ({unknown})")
        ctx.reporter.info(f"Error: not every node could be checked: {'; '.join(missing)}")
        return EXIT_INCOMPLETE
    return 0


def _explain_untrusted(ctx: CLIContext, reports: list[VerifyReport]) -> None:
    for report in reports:
        error = ValidationError(report.failures, report.warnings, subject=f"node {report.endpoint}")
        ctx.reporter.info(f"Error: {error}")
    ctx.reporter.info(
        "Next: the node is not trusted; do not send it secrets. Compare the failed checks "
        "with your measurements."
    )


def _print_rows(ctx: CLIContext, checks: list[NodeCheck]) -> None:
    table = Table("Node", "Registered", "Verification endpoint", "Result", "Identity / reason")
    for check in checks:
        registered = {True: "yes", False: "no", None: "unknown"}[check.registered]
        if check.outcome is CheckOutcome.VERIFIED and check.report is not None:
            identity = check.report.identity
            detail = "-" if identity is None else f"{identity.name} ({identity.role.value})"
        elif check.report is not None:
            detail = ", ".join(f.check for f in check.report.failures)
        else:
            detail = check.reason
        result = {
            CheckOutcome.VERIFIED: "VERIFIED",
            CheckOutcome.REFUSED: "NOT VERIFIED",
            CheckOutcome.NOT_CHECKED: "not checked",
        }[check.outcome]
        table.add_row(check.name, registered, check.endpoint or "-", result, detail)
    ctx.reporter.data.print(table)


def _state_if_needed(
    ctx: CLIContext,
    endpoint: str | None,
    node_endpoint: str | None,
    cluster_id: str | None,
    *,
    all_nodes: bool = False,
) -> ClusterState | None:
    needs_state = all_nodes or cluster_id is None or (endpoint is None and node_endpoint is None)
    needs_state = needs_state or (node_endpoint is not None and ":" not in node_endpoint)
    return ctx.workspace.load_state() if needs_state else None


def _target(state: ClusterState | None, endpoint: str | None, node: str | None) -> Endpoint:
    try:
        if node is not None:
            if ":" in node:
                return Endpoint.parse(node, where="--node-endpoint")
            for record in _required(state).nodes:
                if record.name == node and record.verify_endpoint is not None:
                    return record.verify_endpoint
            raise VerifyError(
                f"the state file knows no node {node!r} with a verification endpoint",
                hint="pass --node-endpoint host:port",
            )
        if endpoint is not None:
            return Endpoint.parse(endpoint, where="--endpoint")
    except MetadataError as err:
        raise click.BadParameter(str(err)) from None
    verify_endpoint = _required(state).verify_endpoint
    if verify_endpoint is None:
        raise WorkspaceError(
            "the state file has no verification endpoint", hint="pass -e/--endpoint host:port"
        )
    return verify_endpoint


def _cluster_id(state: ClusterState | None, text: str | None) -> bytes:
    if text is not None:
        try:
            value = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise click.BadParameter("not valid base64", param_hint="--cluster-id") from None
        if len(value) != 32:
            raise click.BadParameter(
                f"a cluster ID has 32 bytes, got {len(value)}", param_hint="--cluster-id"
            )
        return value
    cluster_id = _required(state).cluster_id
    if cluster_id is None:
        raise WorkspaceError(
            "the state file has no cluster ID (the cluster was not initialized)",
            hint="pass --cluster-id <base64>",
        )
    return cluster_id


def _required(state: ClusterState | None) -> ClusterState:
    # _state_if_needed loads the state whenever a value has to come from it.
    if state is None:
        raise WorkspaceError("the state file was not loaded", hint="pass the value as a flag")
    return state


def _print_report(ctx: CLIContext, report: VerifyReport, *, name: str | None = None) -> None:
    verdict = "VERIFIED" if report.verified else "NOT VERIFIED"
    node = report.endpoint if name is None else f"{name} at {report.endpoint}"
    ctx.reporter.emit_text(f"Node {node} ({report.variant}): {verdict}")
    if report.identity is not None:
        ctx.reporter.emit_text(
            f"Platform identity: {report.identity.name} ({report.identity.role.value}), "
            f"AK SHA-256 {report.identity.ak_sha256[:16]}..., platform root "
            f"{report.identity.platform[:16]}..."
        )
    table = Table("PCR", "Expected", "Actual", "Status")
    for row in report.pcrs:
        table.add_row(str(row.index), row.expected, row.actual, row.status)
    ctx.reporter.data.print(table)
    other = [f for f in report.failures if not f.check.startswith("pcr[")]
    for failure in other:
        ctx.reporter.emit_text(f"FAILED {failure}")
