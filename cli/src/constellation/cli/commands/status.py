"""``constellation status``: what the cluster looks like from the API and the workspace."""

from __future__ import annotations

import base64
from typing import Any

import click
from cryptography import x509
from rich.table import Table

from constellation.attestation.identity.verify import load_platform_roots, platform_fingerprint
from constellation.cli.context import current
from constellation.cli.mini import clusterobjects
from constellation.cli.mini.cluster import MiniRecord, kubeconfig_path
from constellation.cli.mini.processes import is_running
from constellation.cli.output import OutputFormat, output_option


def _root_summary(root: x509.Certificate) -> dict[str, str]:
    return {"subject": root.subject.rfc4514_string(), "sha256": platform_fingerprint(root)}


def _ready(node: Any) -> str:
    for condition in (node.status.conditions or []) if node.status else []:
        if condition.type == "Ready":
            return "Ready" if condition.status == "True" else "NotReady"
    return "NotReady"


def _roles(node: Any) -> str:
    labels = node.metadata.labels or {}
    roles = sorted(
        key.removeprefix("node-role.kubernetes.io/")
        for key in labels
        if key.startswith("node-role.kubernetes.io/")
    )
    return ",".join(roles) or "-"


@click.command(
    "status",
    help="""Show the cluster's nodes (from the Kubernetes API), versions and attestation.

In mini mode also which recorded processes still run. Nodes show NotReady in mini mode: no
kubelet runs there.

\b
Examples:
  constellation status
  constellation status -o json
""",
)
@output_option
def status_command(output_format: str) -> None:
    ctx = current()
    workspace = ctx.workspace
    config = workspace.load_config()
    state = workspace.load_state()
    core = clusterobjects.core_api(kubeconfig_path(workspace))
    nodes = clusterobjects.registered_nodes(core)
    variant, join_measurements, join_roots = clusterobjects.read_join_config(core)
    summary: dict[str, Any] = {
        "clusterID": base64.b64encode(state.cluster_id).decode() if state.cluster_id else None,
        "image": config.image,
        "kubernetesVersion": config.kubernetesVersion,
        "attestationVariant": config.attestation.variant,
        "platformRoots": [
            _root_summary(root) for root in config.attestation.parsed_platform_roots()
        ],
        "joinConfig": {
            "variant": variant,
            "pcrs": sorted(join_measurements),
            "platformRoots": [
                _root_summary(root)
                for root in (load_platform_roots(join_roots.encode()) if join_roots else ())
            ],
        },
        "nodes": [
            {
                "name": name,
                "status": _ready(node),
                "roles": _roles(node),
                "kubeletVersion": node.status.node_info.kubelet_version
                if node.status and node.status.node_info
                else "",
            }
            for name, node in sorted(nodes.items())
        ],
    }
    if MiniRecord.exists(workspace):
        record = MiniRecord.load(workspace)
        summary["processes"] = [
            {"name": p.name, "pid": p.pid, "running": is_running(p)} for p in record.processes
        ]
    if output_format == OutputFormat.JSON:
        ctx.reporter.emit_json(summary)
        return
    ctx.reporter.emit_text(f"Cluster ID:          {summary['clusterID']}")
    ctx.reporter.emit_text(f"Image:               {config.image}")
    ctx.reporter.emit_text(f"Kubernetes:          {config.kubernetesVersion}")
    ctx.reporter.emit_text(f"Attestation variant: {config.attestation.variant}")
    for root in summary["platformRoots"] or [{"subject": "none configured", "sha256": ""}]:
        shown = (
            f"{root['subject']} (SHA-256 {root['sha256']})" if root["sha256"] else root["subject"]
        )
        ctx.reporter.emit_text(f"Platform root:       {shown}")
    table = Table("Node", "Status", "Roles", "Kubelet version")
    for node in summary["nodes"]:
        table.add_row(node["name"], node["status"], node["roles"], node["kubeletVersion"] or "-")
    ctx.reporter.data.print(table)
    if "processes" in summary:
        down = [p["name"] for p in summary["processes"] if not p["running"]]
        ctx.reporter.emit_text(
            f"Mini processes: {len(summary['processes']) - len(down)} of "
            f"{len(summary['processes'])} running"
            + (f" (stopped: {', '.join(down)})" if down else "")
        )
