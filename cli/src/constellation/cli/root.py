"""The root ``constellation`` command and the one place that turns errors into messages.

Contract with the operator:

- exit 0: the command did what it said;
- exit 1: it failed for a reason the project anticipated (any ``ConstellationError``): the
  message says what happened, the hint what to do next; no traceback unless ``--debug``;
- exit 2: the command line itself was wrong (usage error, unknown option, bad value).

An unexpected exception is also exit 1 with a one-line message (and the traceback only with
``--debug``), so a user never sees a raw stack trace.

With ``-o json`` (or ``--json``) on the command line, every failure also prints one JSON object
``{"error": {...}}`` on stdout (``output.error_document``; an unexpected exception's text stays
out of it as it stays out of the message), and the exit code is the same as without.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import click

from constellation.attestation.errors import ConstellationError, ValidationError
from constellation.attestation.measurements import MeasurementsError, MeasurementsSignatureError
from constellation.cli.context import CLIContext
from constellation.cli.errors import CLIError
from constellation.cli.logconfig import configure_cli_logging
from constellation.cli.output import Reporter, error_document, json_requested
from constellation.cli.workspace import Workspace

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

ROOT_HELP = """Create, verify and operate always-encrypted Kubernetes clusters.

\b
Examples:
  constellation config generate mini
  constellation -C ./my-cluster config fetch-measurements --path measurements.json
  constellation verify -o json
"""


@click.group(help=ROOT_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-C",
    "--workspace",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default="current directory",
    help="Directory holding the configuration, state and master secret.",
)
@click.option("--debug", is_flag=True, help="Verbose logs and tracebacks on errors.")
@click.pass_context
def root(ctx: click.Context, workspace: Path, debug: bool) -> None:
    # Library logs (structlog and stdlib) go to stderr, never into the data on stdout.
    configure_cli_logging(debug=debug, stream=sys.stderr)
    # ``run`` passes its reporter in, so that it can tell afterwards what reached stdout.
    reporter = ctx.obj if isinstance(ctx.obj, Reporter) else Reporter(debug=debug)
    ctx.obj = CLIContext(workspace=Workspace(workspace), reporter=reporter, debug=debug)


def _register_commands() -> None:
    from constellation.cli.commands import (
        apply,
        attestation,
        config,
        mini,
        recover,
        status,
        terminate,
        upgrade,
        verify,
        version,
    )

    root.add_command(config.config_group)
    root.add_command(apply.apply_command)
    root.add_command(mini.mini_group)
    root.add_command(recover.recover_command)
    root.add_command(status.status_command)
    root.add_command(terminate.terminate_command)
    root.add_command(upgrade.upgrade_group)
    root.add_command(attestation.attestation_group)
    root.add_command(verify.verify_command)
    root.add_command(version.version_command)


_register_commands()


def _debug_requested(args: Sequence[str]) -> bool:
    for arg in args:
        if arg == "--":
            return False
        if arg == "--debug":
            return True
    return False


def render_error(err: BaseException) -> str:
    """One readable message: what happened and what to do next."""
    if isinstance(err, CLIError):
        hint = err.hint
    elif isinstance(err, MeasurementsSignatureError):
        hint = (
            "the measurements are not signed by the trusted key; check the source and "
            "--public-key. Nothing was changed"
        )
    elif isinstance(err, MeasurementsError):
        hint = "check the measurements source and the configuration. Nothing was changed"
    elif isinstance(err, ValidationError):
        hint = "the node is not trusted; compare the failed checks with your measurements"
    else:
        hint = "rerun with --debug for details"
    text = f"Error: {err}"
    if hint:
        text += f"\nNext: {hint}"
    return text


def run(args: Sequence[str] | None = None) -> int:
    """Run the CLI with ``args`` (default: ``sys.argv[1:]``) and return the exit code."""
    argv = list(sys.argv[1:] if args is None else args)
    debug = _debug_requested(argv)
    reporter = Reporter(debug=debug)

    def failed(kind: str, message: str, code: int, *, hint: str = "", error: object = None) -> int:
        if json_requested(argv):
            type_name = type(error).__name__ if error is not None else ""
            reporter.emit_error(
                error_document(kind, message, exit_code=code, hint=hint, type_name=type_name)
            )
        return code

    try:
        # Without standalone mode click returns ctx.exit(code) as the value instead of raising.
        result = root.main(
            args=argv, prog_name="constellation", standalone_mode=False, obj=reporter
        )
    except click.exceptions.Exit as err:
        if err.exit_code == EXIT_OK:
            return EXIT_OK
        return failed("failed", "the command failed; stderr says why", err.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return failed("aborted", "aborted", EXIT_FAILURE)
    except click.UsageError as err:
        err.show()
        return failed("usage", err.format_message(), EXIT_USAGE, error=err)
    except click.ClickException as err:
        err.show()
        return failed("usage", err.format_message(), err.exit_code, error=err)
    except ConstellationError as err:
        if debug:
            traceback.print_exc()
        click.echo(render_error(err), err=True)
        hint = render_error(err).partition("\nNext: ")[2]
        # A command may document its own codes for kinds of failure (``apply``: 3).
        code = int(getattr(err, "exit_code", EXIT_FAILURE))
        return failed("failed", str(err), code, hint=hint, error=err)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return failed("interrupted", "interrupted", 130)
    except Exception as err:  # the last line of defence: never a raw traceback for users
        if debug:
            traceback.print_exc()
        # An unanticipated message may quote anything (even key material): only with --debug.
        click.echo(
            f"Error: unexpected internal error ({type(err).__name__})\nNext: rerun with "
            "--debug and report the traceback",
            err=True,
        )
        return failed(
            "internal",
            f"unexpected internal error ({type(err).__name__})",
            EXIT_FAILURE,
            hint="rerun with --debug and report the traceback",
            error=err,
        )
    code = result if isinstance(result, int) else EXIT_OK
    if code != EXIT_OK:
        return failed("failed", "the command failed; stderr says why", code)
    return code
