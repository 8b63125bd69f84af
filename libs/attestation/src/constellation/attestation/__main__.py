"""Operator commands of the attestation library: ``python -m constellation.attestation``.

Argument parsing and wiring only; the checks live in the library. Commands are grouped
(``snp verify``) so more groups and commands can be added by registering another parser.

Exit codes: 0 verified, 1 rejected (every failed check is printed), 2 unusable input (a file
that cannot be read, a report or certificate that does not parse, a bad option). Nothing ends
in a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from constellation.attestation import snp
from constellation.attestation.errors import ConstellationError, MalformedEvidenceError

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_UNUSABLE = 2

Handler = Callable[[argparse.Namespace, TextIO], int]


class UnusableInputError(ConstellationError):
    """An input file or option cannot be used at all (exit code 2)."""


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise UnusableInputError(f"cannot read {what} {path!r}: {err.strerror or err}") from None


def _clock(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise UnusableInputError(f"--at {value!r} is not an ISO-8601 time") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _print_json(out: TextIO, document: dict[str, Any]) -> None:
    out.write(json.dumps(document, indent=2, sort_keys=True) + "\n")


def _snp_verify(args: argparse.Namespace, out: TextIO) -> int:
    report = snp.report_bytes(_read(args.report, "report"))
    signer = _read(args.signer, "signer certificate")
    chain = _read(args.chain, "certificate chain") if args.chain else None
    roots = snp.load_trust_directory(Path(args.trust_dir)) if args.trust_dir else None
    try:
        result = snp.verify_report(
            report, signer, chain, at=_clock(args.at), product=args.product, roots=roots
        )
    except snp.VerificationError as err:
        if args.json:
            _print_json(out, {"verified": False, **err.to_dict()})
        else:
            out.write(f"SEV-SNP report REJECTED, {len(err.failures)} failed check(s):\n")
            for failure in err.failures:
                out.write(f"  - {failure}\n")
            for warning in err.warnings:
                out.write(f"  ~ {warning}\n")
        return EXIT_REJECTED
    fields = result.report.to_dict()
    warnings = [w.to_dict() for w in result.warnings]
    if args.json:
        _print_json(
            out,
            {
                "verified": True,
                "product": result.product,
                "signer": result.signer,
                "signer_fingerprint": result.signer_fingerprint.hex(),
                "report": fields,
                "warnings": warnings,
            },
        )
    else:
        out.write(
            f"SEV-SNP report verified: {result.product}, signed by the {result.signer.upper()}\n"
        )
        for name, value in fields.items():
            out.write(f"  {name}: {json.dumps(value) if isinstance(value, dict) else value}\n")
        for warning in result.warnings:
            out.write(f"  ~ {warning}\n")
    return EXIT_OK


def _add_snp(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = groups.add_parser("snp", help="AMD SEV-SNP attestation reports")
    commands = group.add_subparsers(dest="command", required=True, metavar="COMMAND")
    verify = commands.add_parser(
        "verify",
        help="verify a report against AMD's pinned roots",
        description="Verify an SEV-SNP report, its V[CL]EK and the AMD chain. "
        "Exit 0: verified; 1: rejected (all failures listed); 2: unusable input.",
    )
    verify.add_argument("--report", required=True, help="report file: raw bytes or base64 text")
    verify.add_argument("--signer", required=True, help="VCEK or VLEK certificate (PEM or DER)")
    verify.add_argument("--chain", help="PEM with the ASK/ASVK and optionally the ARK")
    verify.add_argument("--trust-dir", help="directory of pinned AMD certificates (ARK/ASK)")
    verify.add_argument("--at", help="validity clock, ISO-8601 (default: now)")
    verify.add_argument("--product", choices=snp.PRODUCTS, help="product line (default: inferred)")
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    verify.set_defaults(handler=_snp_verify)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m constellation.attestation",
        description="Attestation tools for operators.",
    )
    groups = parser.add_subparsers(dest="group", required=True, metavar="GROUP")
    _add_snp(groups)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args, out)
    except (UnusableInputError, MalformedEvidenceError, snp.TrustStoreError) as err:
        sys.stderr.write(f"error: {err}\n")
    except ConstellationError as err:
        sys.stderr.write(f"error: {type(err).__name__}: {err}\n")
    return EXIT_UNUSABLE


if __name__ == "__main__":
    sys.exit(main())
