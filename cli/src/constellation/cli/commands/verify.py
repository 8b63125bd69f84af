"""``constellation verify``: check that a running node is still the node the admin trusts."""

from __future__ import annotations

import base64
import binascii

import click
from rich.table import Table

from constellation.attestation.errors import ValidationError
from constellation.bootstrapper.errors import MetadataError
from constellation.bootstrapper.metadata import Endpoint
from constellation.cli.context import CLIContext, current
from constellation.cli.errors import VerifyError, WorkspaceError
from constellation.cli.nodeverify import (
    REQUEST_TIMEOUT_SECONDS,
    VerifyReport,
    build_validator,
    expected_measurements,
    fresh_nonce,
    judge,
    request_attestation_grpc,
    request_attestation_http,
)
from constellation.cli.output import OutputFormat, output_option
from constellation.cli.workspace import ClusterState


@click.command(
    "verify",
    help="""Verify a node's attestation against the configured measurements.

Sends a fresh 32-byte nonce to the node's verification service and checks the returned
evidence; PCR 15 must hold the value derived from the cluster ID. Exits 1 and lists every
failed check when the node is not trusted.

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
    help="Verify every node of the state file, each with its own fresh nonce.",
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
        raise click.UsageError("--all verifies the state file's nodes; drop -e/--node-endpoint")
    state = _state_if_needed(ctx, endpoint, node_endpoint, cluster_id, all_nodes=all_nodes)
    targets = (
        _all_targets(_required(state)) if all_nodes else [_target(state, endpoint, node_endpoint)]
    )
    expected_id = _cluster_id(state, cluster_id)
    measurements = expected_measurements(config.attestation.parsed_measurements(), expected_id)
    validator = build_validator(
        config.attestation.variant, measurements, config.attestation.parsed_platform_roots()
    )
    request = request_attestation_grpc if protocol == "grpc" else request_attestation_http

    reports: list[VerifyReport] = []
    for target in targets:
        # One fresh nonce per node: evidence from one node can never answer for another.
        nonce = fresh_nonce()
        ctx.reporter.debug(f"nonce {nonce.hex()} (fresh), expecting PCR 15 for the cluster ID")
        with ctx.reporter.step(f"requesting attestation from {target} ({protocol})"):
            document = request(target, nonce, timeout=timeout)
        ctx.reporter.debug(f"received a {len(document)}-byte attestation document")
        reports.append(
            judge(
                validator,
                measurements,
                document,
                nonce,
                endpoint=str(target),
                cluster_id=expected_id,
            )
        )

    if output_format == OutputFormat.JSON:
        if all_nodes:
            ctx.reporter.emit_json(
                {
                    "clusterID": base64.b64encode(expected_id).decode(),
                    "verified": all(r.verified for r in reports),
                    "nodes": [r.to_dict() for r in reports],
                }
            )
        else:
            ctx.reporter.emit_json(reports[0].to_dict())
    else:
        for report in reports:
            _print_report(ctx, report)
    untrusted = [r for r in reports if not r.verified]
    for report in reports:
        prefix = f"{report.endpoint}: " if all_nodes else ""
        for warning in report.warnings:
            ctx.reporter.warning(f"{prefix}{warning}")
    for report in untrusted:
        error = ValidationError(report.failures, report.warnings, subject=f"node {report.endpoint}")
        ctx.reporter.info(f"Error: {error}")
    if untrusted:
        ctx.reporter.info(
            "Next: the node is not trusted; do not send it secrets. Compare the failed checks "
            "with your measurements."
        )
        click_ctx.exit(1)


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


def _all_targets(state: ClusterState) -> list[Endpoint]:
    targets = [r.verify_endpoint for r in state.nodes if r.verify_endpoint is not None]
    if not targets:
        raise WorkspaceError(
            "the state file lists no node with a verification endpoint",
            hint="verify single nodes with -e/--endpoint host:port",
        )
    return targets


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


def _print_report(ctx: CLIContext, report: VerifyReport) -> None:
    verdict = "VERIFIED" if report.verified else "NOT VERIFIED"
    ctx.reporter.emit_text(f"Node {report.endpoint} ({report.variant}): {verdict}")
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
