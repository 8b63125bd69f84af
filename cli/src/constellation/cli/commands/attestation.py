"""``constellation attestation``: operator tools on raw attestation evidence.

``attestation verify`` is the CLI face of ``python -m constellation.attestation snp verify``:
the same flags and the same exit codes, calling the same library function
(``constellation.attestation.snp.verify_report``):

- 0: the report verified (fields printed);
- 1: the report was rejected (every failed check printed);
- 2: the input is unusable (unreadable file, a report or certificate that does not parse, a
  bad option or trust directory): every typed error other than a rejection.

With ``-o json`` (or ``--json``) stdout carries one JSON object whatever the outcome: the
verified report, the rejection with its failures and an ``error`` member, or ``{"error": ...}``
(``output.error_document``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from constellation.attestation import snp
from constellation.attestation.errors import ConstellationError, MalformedEvidenceError
from constellation.cli.context import CLIContext, current
from constellation.cli.output import OutputFormat, error_document, output_option

EXIT_REJECTED = 1
EXIT_UNUSABLE = 2
MAX_INPUT_SIZE = 1024 * 1024


@click.group(
    "attestation",
    help="""Inspect and verify attestation evidence.

\b
Examples:
  constellation attestation verify --report report.bin --signer vcek.pem --chain chain.pem
""",
)
def attestation_group() -> None:
    pass


_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@attestation_group.command(
    "verify",
    help="""Verify an AMD SEV-SNP report, its V[CL]EK and the AMD chain to a pinned root.

Exit 0: verified; 1: rejected (every failed check listed); 2: unusable input.

\b
Examples:
  constellation attestation verify --report attestation.bin --signer vcek.pem \\
      --chain certchain.pem --at 2025-06-01T00:00:00Z
  constellation attestation verify --report report.b64 --signer vlek.der --product Genoa -o json
""",
)
@click.option("--report", required=True, type=_FILE, help="Report file: raw bytes or base64.")
@click.option("--signer", required=True, type=_FILE, help="VCEK or VLEK certificate (PEM/DER).")
@click.option("--chain", type=_FILE, help="PEM with the ASK/ASVK and optionally the ARK.")
@click.option(
    "--trust-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Directory of pinned AMD certificates (ARK/ASK).",
)
@click.option("--at", "at_text", help="Validity clock, ISO-8601 (default: now).")
@click.option(
    "--product", type=click.Choice(list(snp.PRODUCTS)), help="Product line (default: inferred)."
)
@click.option("--json", "json_flag", is_flag=True, help="Same as -o json.")
@output_option
@click.pass_context
def verify_command(
    click_ctx: click.Context,
    report: Path,
    signer: Path,
    chain: Path | None,
    trust_dir: Path | None,
    at_text: str | None,
    product: str | None,
    json_flag: bool,
    output_format: str,
) -> None:
    ctx = current()
    as_json = json_flag or output_format == OutputFormat.JSON
    at = _clock(at_text)
    try:
        report_bytes = snp.report_bytes(_read(report))
        signer_bytes = _read(signer)
        chain_bytes = _read(chain) if chain is not None else None
        roots = snp.load_trust_directory(trust_dir) if trust_dir is not None else None
        result = snp.verify_report(
            report_bytes, signer_bytes, chain_bytes, at=at, product=product, roots=roots
        )
    except snp.VerificationError as err:
        _print_rejection(ctx, err, as_json)
        click_ctx.exit(EXIT_REJECTED)
    except (ConstellationError, OSError) as err:
        # Anything typed that is not a verdict means the inputs could not be evaluated.
        reason = f"{err.strerror}: {err.filename}" if isinstance(err, OSError) else str(err)
        hint = "check that the files are an SEV-SNP report and AMD certificates"
        ctx.reporter.info(f"Error: unusable input: {reason}")
        ctx.reporter.info(f"Next: {hint}")
        if as_json:
            ctx.reporter.emit_error(
                error_document(
                    "unusable-input",
                    f"unusable input: {reason}",
                    exit_code=EXIT_UNUSABLE,
                    hint=hint,
                    type_name=type(err).__name__,
                )
            )
        click_ctx.exit(EXIT_UNUSABLE)
    _print_verified(ctx, result, as_json)


def _read(path: Path) -> bytes:
    with path.open("rb") as handle:
        data = handle.read(MAX_INPUT_SIZE + 1)
    if len(data) > MAX_INPUT_SIZE:
        raise MalformedEvidenceError(f"{path} is larger than {MAX_INPUT_SIZE} bytes")
    return data


def _clock(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("not an ISO-8601 time", param_hint="--at") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _print_rejection(ctx: CLIContext, err: snp.VerificationError, as_json: bool) -> None:
    if as_json:
        error = error_document(
            "rejected",
            f"the SEV-SNP report is not trusted: {len(err.failures)} failed check(s)",
            exit_code=EXIT_REJECTED,
            hint="compare the failed checks with the policy",
            type_name=type(err).__name__,
        )
        ctx.reporter.emit_json({"verified": False, **err.to_dict(), "error": error})
    else:
        ctx.reporter.emit_text(f"SEV-SNP report REJECTED, {len(err.failures)} failed check(s):")
        for failure in err.failures:
            ctx.reporter.emit_text(f"  - {failure}")
        for warning in err.warnings:
            ctx.reporter.emit_text(f"  ~ {warning}")
    ctx.reporter.info(
        "Error: the report is not trusted. Next: compare the failed checks with the policy."
    )


def _print_verified(ctx: CLIContext, result: snp.VerifiedReport, as_json: bool) -> None:
    fields: dict[str, Any] = result.report.to_dict()
    if as_json:
        ctx.reporter.emit_json(
            {
                "verified": True,
                "product": result.product,
                "signer": result.signer,
                "signer_fingerprint": result.signer_fingerprint.hex(),
                "report": fields,
                "warnings": [w.to_dict() for w in result.warnings],
            }
        )
        return
    ctx.reporter.emit_text(
        f"SEV-SNP report verified: {result.product}, signed by the {result.signer.upper()}"
    )
    for name, value in fields.items():
        ctx.reporter.emit_text(f"  {name}: {value}")
    for warning in result.warnings:
        ctx.reporter.warning(str(warning))
