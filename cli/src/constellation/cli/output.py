"""How the CLI talks to people and to machines.

Two streams, never mixed: *data* (the result of a command, as text or ``-o json``) goes to
stdout; everything else — progress, log lines, errors — goes to stderr. Long steps show a rich
spinner when stderr is a terminal; otherwise (CI, pipes, tests) each step prints one plain line
when it starts and one when it ends, so logs stay readable.

Under ``-o json`` a failing command still prints exactly one JSON object on stdout, so that a
machine reading it never has to parse stderr: ``{"error": {"kind", "message", "hint",
"exit_code", "type"}}`` (:func:`error_document`). A command that already printed its own
document (``attestation verify`` puts the error into its rejection) is not followed by a second
one; the root command prints the error object for everything else (``root.run``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from typing import IO, Any

import click
from rich.console import Console

_PIPE_WIDTH = 220


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


def output_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """The ``-o/--output [text|json]`` option every data-reporting command carries."""
    return click.option(
        "-o",
        "--output",
        "output_format",
        type=click.Choice([f.value for f in OutputFormat]),
        default=OutputFormat.TEXT.value,
        show_default=True,
        help="Format of the data printed on stdout.",
    )(function)


def json_requested(args: Sequence[str]) -> bool:
    """Whether the command line asks for ``-o json`` (or ``--json``), read before click parses.

    The root command needs this even when parsing fails, and click may report a bad option
    before it has seen ``-o``. The last ``-o``/``--output`` wins; nothing after ``--`` counts.
    """
    wanted = False
    tokens = iter(args)
    for arg in tokens:
        if arg == "--":
            break
        if arg == "--json":
            wanted = True
        elif arg in ("-o", "--output"):
            wanted = next(tokens, "") == OutputFormat.JSON
        elif arg.startswith("--output="):
            wanted = arg.removeprefix("--output=") == OutputFormat.JSON
        elif arg.startswith("-o") and not arg.startswith("--"):
            wanted = arg.removeprefix("-o").removeprefix("=") == OutputFormat.JSON
    return wanted


def error_document(
    kind: str, message: str, *, exit_code: int, hint: str = "", type_name: str = ""
) -> dict[str, Any]:
    """The ``error`` member of a failed command's JSON output (see the module docs)."""
    return {
        "kind": kind,
        "message": message,
        "hint": hint,
        "exit_code": exit_code,
        "type": type_name,
    }


class Reporter:
    """The pair of consoles a command writes to; created once by the root command."""

    def __init__(
        self,
        *,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
        debug: bool = False,
    ) -> None:
        data_stream = stdout or sys.stdout
        # Hex digests must not be folded when the output goes to a file or a pipe.
        self.data = Console(
            file=data_stream,
            highlight=False,
            soft_wrap=True,
            width=None if data_stream.isatty() else _PIPE_WIDTH,
        )
        self.log = Console(
            file=stderr or sys.stderr,
            highlight=False,
            stderr=True,
            soft_wrap=True,
        )
        self.debug_enabled = debug
        # Whether the command printed data on stdout (an error object must not follow it).
        self.data_emitted = False

    @property
    def interactive(self) -> bool:
        return self.log.is_terminal

    def info(self, message: str) -> None:
        self.log.print(message, markup=False)

    def debug(self, message: str) -> None:
        if self.debug_enabled:
            self.log.print(f"debug: {message}", markup=False, style="dim")

    def warning(self, message: str) -> None:
        self.log.print(f"Warning: {message}", markup=False, style="yellow")

    @contextmanager
    def step(self, description: str) -> Iterator[None]:
        """Show progress for a long step: a spinner on a terminal, plain lines otherwise."""
        started = time.monotonic()
        if self.interactive:
            with self.log.status(description):
                yield
            self.log.print(f"✓ {description}", markup=False)
            return
        self.log.print(f"... {description}", markup=False)
        yield
        self.log.print(f"done: {description} ({time.monotonic() - started:.1f}s)", markup=False)

    def emit_json(self, document: Any) -> None:
        """Print machine-readable data on stdout (one JSON document)."""
        self.data.file.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
        self.data.file.flush()
        self.data_emitted = True

    def emit_error(self, error: dict[str, Any]) -> None:
        """Print ``{"error": error}`` unless the command already printed its document."""
        if not self.data_emitted:
            self.emit_json({"error": error})

    def emit_text(self, text: str) -> None:
        self.data.print(text, markup=False)
        self.data_emitted = True
