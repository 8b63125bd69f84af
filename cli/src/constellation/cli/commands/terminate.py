"""``constellation terminate``: remove the cluster (for a mini cluster: ``mini down``)."""

from __future__ import annotations

import sys

import click

from constellation.cli.commands.mini import run_down
from constellation.cli.context import current
from constellation.cli.mini.cluster import MiniRecord
from constellation.cli.mini.errors import MiniError
from constellation.cli.output import OutputFormat, output_option


@click.command(
    "terminate",
    help="""Terminate the cluster of this workspace and delete its files.

Asks for confirmation unless --yes is given or stdin is not a terminal. For a mini cluster this
is `constellation mini down`.

\b
Examples:
  constellation terminate
  constellation terminate --yes -o json
""",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@output_option
def terminate_command(yes: bool, output_format: str) -> None:
    ctx = current()
    if not MiniRecord.exists(ctx.workspace):
        raise MiniError(
            f"no cluster this build can terminate in {ctx.workspace.root}",
            hint="this build terminates mini clusters only",
        )
    if not yes and sys.stdin.isatty():
        click.confirm(
            f"Terminate the cluster in {ctx.workspace.root.resolve()}? Its master secret and "
            "state are deleted",
            abort=True,
        )
    result = run_down(ctx)
    if output_format == OutputFormat.JSON:
        ctx.reporter.emit_json(result)
        return
    ctx.reporter.emit_text(
        f"Terminated: stopped {len(result['stopped'])} process(es), removed "
        f"{', '.join(result['removed'])}."
    )
