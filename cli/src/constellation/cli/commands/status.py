"""``constellation status``: what the cluster looks like from the API and the workspace.

The node table is the inventory (:mod:`constellation.cli.inventory`): registered Nodes and
the workspace's nodes alike, so a node only one source knows is shown, and marked as such.
An API server that cannot be asked is one line of the output, not the end of the command.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import click
from cryptography import x509
from rich.table import Table

from constellation.attestation.errors import ConstellationError
from constellation.attestation.identity.verify import load_platform_roots, platform_fingerprint
from constellation.cli.context import CLIContext, current
from constellation.cli.inventory import KnownNode, load_inventory
from constellation.cli.inventory import core_api as inventory_api
from constellation.cli.mini.cluster import MiniRecord, kubeconfig_path
from constellation.cli.mini.processes import ProcessRecord, is_running
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
    help="""Show the cluster's nodes, versions and attestation configuration.

Every node there is gets a row: the Nodes registered in the Kubernetes API server and the nodes
the workspace knows (state file, mini record), with whether it is registered, whether its
processes run (mini mode), and which verification endpoint can check it (`verify --all` does).
If the API server cannot be asked, one line says so and the rest of what is known is shown.
Nodes show NotReady in mini mode: no kubelet runs there.

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
    inventory = load_inventory(workspace, state)
    api_error = inventory.registered_error
    join_config: dict[str, Any] | None = None
    join_config_error: str | None = None
    if api_error is None:
        try:
            join_config = _join_config(kubeconfig_path(workspace))
        except ConstellationError as err:
            join_config_error = str(err)
    record = MiniRecord.load(workspace) if MiniRecord.exists(workspace) else None
    summary: dict[str, Any] = {
        "clusterID": base64.b64encode(state.cluster_id).decode() if state.cluster_id else None,
        "image": config.image,
        "kubernetesVersion": config.kubernetesVersion,
        "attestationVariant": config.attestation.variant,
        "platformRoots": [
            _root_summary(root) for root in config.attestation.parsed_platform_roots()
        ],
        "apiServer": {
            "reachable": api_error is None,
            "error": None if api_error is None else str(api_error),
        },
        "joinConfig": join_config,
        "joinConfigError": join_config_error,
        "nodes": [_node_row(known) for known in inventory.nodes],
    }
    if record is not None:
        from constellation.cli.mini.supervision import all_statuses

        summary["processes"] = [
            {"name": p.name, "pid": p.pid, "running": is_running(p)} for p in record.processes
        ]
        summary["supervision"] = [
            {
                "unit": doc["unit"],
                "state": doc.get("state"),
                "restarts": _count(doc.get("restarts")),
                "reboots": _count(doc.get("reboots")),
                "lastExit": doc.get("lastExit"),
            }
            for doc in all_statuses(record.directory)
        ]
    if output_format == OutputFormat.JSON:
        ctx.reporter.emit_json(summary)
        return
    _print_status(ctx, summary)


def _join_config(kubeconfig: Path) -> dict[str, Any]:
    from constellation.cli.mini import clusterobjects

    core, _ = inventory_api(kubeconfig)
    try:
        variant, measurements, roots = clusterobjects.read_join_config(core)
    finally:
        core.api_client.close()
    return {
        "variant": variant,
        "pcrs": sorted(measurements),
        "platformRoots": [
            _root_summary(root) for root in (load_platform_roots(roots.encode()) if roots else ())
        ],
    }


def _count(value: Any) -> int:
    """A counter of a supervision file: a number, or per-process numbers summed."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return sum(v for v in value.values() if isinstance(v, int) and not isinstance(v, bool))
    return 0


def _running(process: ProcessRecord | None) -> bool | None:
    return None if process is None else is_running(process)


def _node_row(known: KnownNode) -> dict[str, Any]:
    """One node as status shows it; ``None`` means "not known" (no source says)."""
    node = known.node
    node_info = node.status.node_info if node is not None and node.status else None
    mini = known.mini
    return {
        "name": known.name,
        "role": known.role,
        "inWorkspace": known.in_workspace,
        "registered": known.registered,
        "status": _ready(node) if node is not None else None,
        "roles": _roles(node) if node is not None else None,
        "kubeletVersion": node_info.kubelet_version if node_info is not None else "",
        "processesRunning": None
        if mini is None
        else {"swtpm": is_running(mini.swtpm), "bootstrapper": is_running(mini.bootstrapper)},
        "verifyEndpoint": None if known.verify_endpoint is None else str(known.verify_endpoint),
        "verificationRunning": _running(known.verification_process),
    }


def _yes_no(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "unknown"}[value]


def _processes_cell(row: dict[str, Any]) -> str:
    running = row["processesRunning"]
    if running is None:
        return "-"
    stopped = [name for name, up in running.items() if not up]
    return "running" if not stopped else f"stopped: {', '.join(stopped)}"


def _verification_cell(row: dict[str, Any]) -> str:
    endpoint = str(row["verifyEndpoint"] or "")
    if not endpoint:
        return "none known (cannot be checked)"
    if row["verificationRunning"] is False:
        return f"{endpoint} (stopped)"
    return endpoint


def _print_status(ctx: CLIContext, summary: dict[str, Any]) -> None:
    ctx.reporter.emit_text(f"Cluster ID:          {summary['clusterID']}")
    ctx.reporter.emit_text(f"Image:               {summary['image']}")
    ctx.reporter.emit_text(f"Kubernetes:          {summary['kubernetesVersion']}")
    ctx.reporter.emit_text(f"Attestation variant: {summary['attestationVariant']}")
    for root in summary["platformRoots"] or [{"subject": "none configured", "sha256": ""}]:
        shown = (
            f"{root['subject']} (SHA-256 {root['sha256']})" if root["sha256"] else root["subject"]
        )
        ctx.reporter.emit_text(f"Platform root:       {shown}")
    api = summary["apiServer"]
    if not api["reachable"]:
        ctx.reporter.emit_text(
            f"Kubernetes API:      {api['error']}; registered Nodes and join-config unknown"
        )
    if summary["joinConfigError"] is not None:
        ctx.reporter.emit_text(f"Join config:         unreadable: {summary['joinConfigError']}")
    table = Table(
        "Node",
        "Role",
        "In workspace",
        "Registered",
        "Status",
        "Processes",
        "Verification endpoint",
    )
    for row in summary["nodes"]:
        table.add_row(
            row["name"],
            row["role"],
            _yes_no(row["inWorkspace"]),
            _yes_no(row["registered"]),
            row["status"] or "-",
            _processes_cell(row),
            _verification_cell(row),
        )
    ctx.reporter.data.print(table)
    restarted = [u for u in summary.get("supervision", []) if u["restarts"] or u["reboots"]]
    if restarted:
        ctx.reporter.emit_text(
            "Restarted by supervision: "
            + "; ".join(
                f"{u['unit']} {u['restarts']} restart(s), {u['reboots']} reboot(s)"
                + (f", last: {u['lastExit']}" if u["lastExit"] else "")
                for u in restarted
            )
        )
    if "processes" in summary:
        down = [p["name"] for p in summary["processes"] if not p["running"]]
        ctx.reporter.emit_text(
            f"Mini processes: {len(summary['processes']) - len(down)} of "
            f"{len(summary['processes'])} running"
            + (f" (stopped: {', '.join(down)})" if down else "")
        )
