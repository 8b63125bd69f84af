"""``constellation upgrade apply``: move the cluster to measurements of a new image.

Steps, in this order: verify the detached signature with the configured image-publisher key
(nothing in the file is used before that); pick the configured variant's entry; write it into
the cluster's ``join-config`` ConfigMap (PCR 15 expected zero, as for every join); in mini mode
refresh the JoinService's mounted files from the API (the kubelet's part); finally save the
configuration (image version and measurements). The JoinService reloads its validator from the
changed files without a restart; nodes already in the cluster are not touched.
"""

from __future__ import annotations

from pathlib import Path

import click

from constellation.attestation.measurements import MeasurementsError, verify_signed_measurements
from constellation.cli.context import current
from constellation.cli.mini import clusterobjects
from constellation.cli.mini.cluster import MiniRecord, kubeconfig_path
from constellation.cli.mini.errors import ApplyError
from constellation.cli.output import OutputFormat, output_option
from constellation.cli.signedmeasurements import (
    MAX_MEASUREMENTS_SIZE,
    MAX_SIGNATURE_SIZE,
    default_signature_location,
    fetch_bytes,
    resolve_public_key,
)


@click.group(
    "upgrade",
    help="""Upgrade a running cluster.

\b
Examples:
  constellation upgrade apply --measurements v2.json --signature v2.json.sig
""",
)
def upgrade_group() -> None:
    pass


@upgrade_group.command(
    "apply",
    help="""Trust the signed measurements of a new node image for joining nodes.

The signature (cosign blob format) is verified with the configured measurement-service public
key first; then join-config in the cluster and the configuration file are updated. The
JoinService picks the change up without a restart.

\b
Examples:
  constellation upgrade apply --measurements v2.json --signature v2.json.sig
  constellation upgrade apply --measurements https://cdn.example/v2/measurements.json -o json
""",
)
@click.option("--measurements", "location", required=True, help="Path or URL of the file.")
@click.option("--signature", help="Path or URL of the signature (default: <measurements>.sig).")
@click.option(
    "--public-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM public key to verify with (default: from the configuration).",
)
@output_option
def upgrade_apply_command(
    location: str, signature: str | None, public_key: Path | None, output_format: str
) -> None:
    ctx = current()
    workspace = ctx.workspace
    config = workspace.load_config()
    state = workspace.load_state()
    if state.cluster_id is None:
        raise ApplyError("the cluster is not initialized", hint="run `constellation apply` first")
    key = resolve_public_key(config, override=public_key, base=workspace.root)
    data = fetch_bytes(location, max_size=MAX_MEASUREMENTS_SIZE, base=Path.cwd())
    signature_bytes = fetch_bytes(
        signature or default_signature_location(location),
        max_size=MAX_SIGNATURE_SIZE,
        base=Path.cwd(),
    )
    with ctx.reporter.step("verifying the signature of the new measurements"):
        published = verify_signed_measurements(data, signature_bytes, key)
        measurements = published.for_variant(config.attestation.variant)
        if not measurements:
            raise MeasurementsError(
                f"the signed measurements for {config.attestation.variant!r} are empty"
            )
        updated = config.model_copy(update={"image": published.version}).with_measurements(
            measurements
        )
    with ctx.reporter.step("updating join-config in the cluster"):
        core = clusterobjects.core_api(kubeconfig_path(workspace))
        clusterobjects.write_join_config(
            core, config.attestation.variant, measurements, config.attestation.platformRoots
        )
        if MiniRecord.exists(workspace):
            record = MiniRecord.load(workspace)
            files = clusterobjects.MountedFiles(
                record.services_dir / "keyservice", record.services_dir / "joinservice"
            )
            clusterobjects.materialize_join_config(core, files)
    workspace.save_config(updated, overwrite=True)
    summary = {
        "image": published.version,
        "previousImage": config.image,
        "variant": config.attestation.variant,
        "measurements": measurements.to_dict(),
    }
    if output_format == OutputFormat.JSON:
        ctx.reporter.emit_json(summary)
        return
    ctx.reporter.emit_text(
        f"Upgraded join-config from image {config.image} to {published.version} "
        f"({len(measurements)} verified measurements); joining nodes must now present them."
    )
