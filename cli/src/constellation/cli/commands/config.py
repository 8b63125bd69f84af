"""``constellation config``: create the configuration and fill it with signed measurements."""

from __future__ import annotations

from pathlib import Path

import click

from constellation.cli.config import Provider, default_config
from constellation.cli.context import current
from constellation.cli.output import OutputFormat, output_option
from constellation.cli.signedmeasurements import (
    FETCH_TIMEOUT_SECONDS,
    MAX_MEASUREMENTS_SIZE,
    MAX_SIGNATURE_SIZE,
    default_signature_location,
    fetch_bytes,
    resolve_public_key,
    verify_and_merge,
)


@click.group(
    "config",
    help="""Work with the cluster configuration (constellation-conf.yaml).

\b
Examples:
  constellation config generate
  constellation config fetch-measurements --url https://example.org/v2.19.0/measurements.json
""",
)
def config_group() -> None:
    pass


@config_group.command(
    "generate",
    help="""Write a commented default configuration for PROVIDER (default: mini).

Refuses to overwrite an existing configuration unless --force is given.

\b
Examples:
  constellation config generate
  constellation -C ./cluster config generate mini --force
""",
)
@click.argument(
    "provider",
    type=click.Choice([p.value for p in Provider]),
    default=Provider.MINI.value,
    required=False,
)
@click.option("--force", is_flag=True, help="Overwrite an existing configuration.")
def generate_command(provider: str, force: bool) -> None:
    ctx = current()
    config = default_config(Provider(provider))
    ctx.workspace.save_config(config, overwrite=force)
    ctx.reporter.info(
        f"Wrote {ctx.workspace.config_path} (provider {provider}, "
        f"variant {config.attestation.variant})."
    )
    ctx.reporter.info(
        "Next: fill the measurements with `constellation config fetch-measurements`"
        + (" or `constellation mini up`." if provider == Provider.MINI.value else ".")
    )


@config_group.command(
    "fetch-measurements",
    help="""Fetch signed measurements, verify them, and merge them into the configuration.

The signature (cosign blob format, ECDSA P-256) is verified with the measurement-service
public key BEFORE anything in the file is used; the file must be published for the configured
image and contain the configured attestation variant. On any failure the configuration file
is left exactly as it was.

\b
Examples:
  constellation config fetch-measurements --url https://cdn.example/v2.19.0/measurements.json
  constellation config fetch-measurements --path measurements.json --signature measurements.json.sig
  constellation config fetch-measurements --url file:///srv/m.json --public-key cosign.pub -o json
""",
)
@click.option("--url", help="http(s):// or file:// URL of the measurements JSON.")
@click.option(
    "--path",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Local path of the measurements JSON.",
)
@click.option("--signature-url", help="URL of the detached signature (default: <url>.sig).")
@click.option(
    "--signature",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Local path of the detached signature (default: <path>.sig).",
)
@click.option(
    "--public-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM public key to verify with (default: from the configuration).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1, max=300),
    default=FETCH_TIMEOUT_SECONDS,
    show_default=True,
    help="Seconds to wait for each HTTP request.",
)
@output_option
def fetch_measurements_command(
    url: str | None,
    path: Path | None,
    signature_url: str | None,
    signature: Path | None,
    public_key: Path | None,
    timeout: float,
    output_format: str,
) -> None:
    if (url is None) == (path is None):
        raise click.UsageError("give exactly one of --url or --path")
    if signature_url is not None and signature is not None:
        raise click.UsageError("give at most one of --signature-url or --signature")
    ctx = current()
    workspace = ctx.workspace
    config = workspace.load_config()
    public_key_pem = resolve_public_key(config, override=public_key, base=workspace.root)

    location = url if url is not None else str(path)
    if signature_url is not None:
        signature_location = signature_url
    elif signature is not None:
        signature_location = str(signature)
    else:
        signature_location = default_signature_location(location)

    with ctx.reporter.step(f"fetching measurements from {location}"):
        data = fetch_bytes(
            location, max_size=MAX_MEASUREMENTS_SIZE, timeout=timeout, base=Path.cwd()
        )
        signature_bytes = fetch_bytes(
            signature_location, max_size=MAX_SIGNATURE_SIZE, timeout=timeout, base=Path.cwd()
        )
    ctx.reporter.debug(
        f"fetched {len(data)} bytes from {location}, "
        f"{len(signature_bytes)} signature bytes from {signature_location}"
    )
    with ctx.reporter.step("verifying the signature and merging"):
        result = verify_and_merge(config, data, signature_bytes, public_key_pem)
        workspace.save_config(result.config, overwrite=True)

    summary = {
        "image": result.image.version,
        "ref": result.image.ref,
        "stream": result.image.stream,
        "variant": config.attestation.variant,
        "measurements": result.measurements.to_dict(),
        "config": str(workspace.config_path),
    }
    if output_format == OutputFormat.JSON:
        ctx.reporter.emit_json(summary)
        return
    ctx.reporter.emit_text(
        f"Merged {len(result.measurements)} verified measurements for image "
        f"{result.image.version} ({config.attestation.variant}) into {workspace.config_path}:"
    )
    for index, measurement in result.measurements.items():
        mode = " (warn only)" if measurement.warn_only else ""
        ctx.reporter.emit_text(f"  PCR {index:2d}: {measurement.expected.hex()}{mode}")
