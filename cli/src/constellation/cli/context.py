"""What every command receives from the root command: the workspace and the output streams."""

from __future__ import annotations

from dataclasses import dataclass

import click

from constellation.cli.output import Reporter
from constellation.cli.workspace import Workspace


@dataclass(frozen=True)
class CLIContext:
    workspace: Workspace
    reporter: Reporter
    debug: bool


def current() -> CLIContext:
    """The context the root command stored (commands call this instead of taking globals)."""
    obj = click.get_current_context().find_object(CLIContext)
    if obj is None:  # only when a command is invoked without the root group
        raise RuntimeError("command invoked outside the constellation root group")
    return obj
