"""``constellation version``: which CLI is this, for bug reports and compatibility checks."""

from __future__ import annotations

import platform
from importlib import metadata

import click

from constellation.cli.context import current
from constellation.cli.output import OutputFormat, output_option

_PACKAGES = ("constellation-cli", "constellation-attestation", "constellation-bootstrapper")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


@click.command(
    "version",
    help="""Print the versions of the CLI and the libraries it verifies with.

\b
Examples:
  constellation version
  constellation version -o json
""",
)
@output_option
def version_command(output_format: str) -> None:
    reporter = current().reporter
    components = {package: _version(package) for package in _PACKAGES}
    info = {
        "version": _version("constellation-cli"),
        "components": components,
        "python": platform.python_version(),
        "platform": f"{platform.system().lower()}/{platform.machine()}",
    }
    if output_format == OutputFormat.JSON:
        reporter.emit_json(info)
        return
    reporter.emit_text(f"Version:  {info['version']}")
    for package, version in components.items():
        reporter.emit_text(f"  {package}: {version}")
    reporter.emit_text(f"Python:   {info['python']}")
    reporter.emit_text(f"Platform: {info['platform']}")
