"""``constellation attestation verify`` on real Azure SEV-SNP evidence (../shared/vectors).

The same inputs must give the same verdict and exit code as the library's operator command
``python -m constellation.attestation snp verify``.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest

from constellation.attestation.__main__ import main as library_main

REPO_ROOT = Path(__file__).resolve().parents[3]
VECTORS = REPO_ROOT.parent / "shared" / "vectors" / "azure-sev-snp"
# The vector's VCEK is valid 2023-08-30 .. 2030-08-30: pin the clock inside that window.
AT = "2025-06-01T00:00:00Z"
MEASUREMENT = (
    "5677f1de87289e7ad2c7e99c805d0468b1a9ccd83f0d245afa5242d405da4d57"
    "25852f8c6550564870e5f3206dfb1841"
)


@pytest.fixture(scope="module")
def azure() -> Path:
    if not (VECTORS / "attestation.bin").is_file():
        pytest.skip(f"real Azure SEV-SNP vectors not found at {VECTORS} (../shared/vectors absent)")
    return VECTORS


def _flags(azure: Path, report: Path | None = None, *extra: str) -> list[str]:
    return [
        "--report",
        str(report or azure / "attestation.bin"),
        "--signer",
        str(azure / "vcek.pem"),
        "--chain",
        str(azure / "certchain.pem"),
        "--at",
        AT,
        *extra,
    ]


def _library(*argv: str) -> int:
    return library_main(["snp", "verify", *argv], io.StringIO())


def test_real_report_verifies(invoke: Any, tmp_path: Path, azure: Path) -> None:
    result = invoke(tmp_path, "attestation", "verify", *_flags(azure))
    assert result.code == 0, result.stderr
    assert "verified: Milan" in result.stdout
    assert MEASUREMENT in result.stdout
    assert _library(*_flags(azure)) == 0


@pytest.mark.parametrize("style", [("-o", "json"), ("--json",)])
def test_json_output(invoke: Any, tmp_path: Path, azure: Path, style: tuple[str, ...]) -> None:
    result = invoke(tmp_path, "attestation", "verify", *_flags(azure, None, *style))
    assert result.code == 0
    document = json.loads(result.stdout)
    assert document["verified"] is True
    assert document["product"] == "Milan"
    assert document["report"]["measurement"] == MEASUREMENT


def test_base64_report_is_accepted(invoke: Any, tmp_path: Path, azure: Path) -> None:
    encoded = tmp_path / "report.b64"
    encoded.write_bytes(base64.encodebytes((azure / "attestation.bin").read_bytes()))
    assert invoke(tmp_path, "attestation", "verify", *_flags(azure, encoded)).code == 0


def test_tampered_report_is_rejected_with_every_failure(
    invoke: Any, tmp_path: Path, azure: Path
) -> None:
    tampered = bytearray((azure / "attestation.bin").read_bytes())
    tampered[0x30] = 1  # VMPL 1: breaks the signature and the VMPL check
    path = tmp_path / "tampered.bin"
    path.write_bytes(bytes(tampered))
    flags = _flags(azure, path, "--at", "2031-01-01T00:00:00+00:00", "-o", "json")
    result = invoke(tmp_path, "attestation", "verify", *flags)
    assert result.code == 1
    document = json.loads(result.stdout)
    assert document["verified"] is False
    checks = {f["check"] for f in document["failures"]}
    assert {"snp.vcek.validity", "snp.report.signature", "snp.vmpl"} <= checks
    assert "Traceback" not in result.stderr
    assert _library(*_flags(azure, path)) == 1


def test_expired_clock_is_rejected(invoke: Any, tmp_path: Path, azure: Path) -> None:
    flags = _flags(azure, None, "--at", "2031-01-01T00:00:00Z")
    result = invoke(tmp_path, "attestation", "verify", *flags)
    assert result.code == 1
    assert "snp.vcek.validity" in result.stdout


def test_malformed_report_is_unusable_input(invoke: Any, tmp_path: Path, azure: Path) -> None:
    short = tmp_path / "short.bin"
    short.write_bytes((azure / "attestation.bin").read_bytes()[:100])
    result = invoke(tmp_path, "attestation", "verify", *_flags(azure, short))
    assert result.code == 2
    assert "unusable input" in result.stderr
    assert "Traceback" not in result.stderr
    assert _library(*_flags(azure, short)) == 2


def test_certificate_that_does_not_parse_is_unusable_input(
    invoke: Any, tmp_path: Path, azure: Path
) -> None:
    garbage = tmp_path / "vcek.pem"
    garbage.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    flags = _flags(azure)
    flags[flags.index("--signer") + 1] = str(garbage)
    assert invoke(tmp_path, "attestation", "verify", *flags).code == 2


@pytest.mark.parametrize(
    "extra", [("--at", "yesterday"), ("--product", "Naples"), ("--report", "/absent")]
)
def test_bad_options_exit_2(
    invoke: Any, tmp_path: Path, azure: Path, extra: tuple[str, ...]
) -> None:
    assert invoke(tmp_path, "attestation", "verify", *_flags(azure, None, *extra)).code == 2


# -- every failure under -o json is one JSON object with an "error" member on stdout, and the
# -- exit code is the one of the contract (1 rejected, 2 unusable input).


def _one_json_error(stdout: str, code: int) -> dict[str, Any]:
    document = json.loads(stdout)  # exactly one JSON document, nothing else on stdout
    assert isinstance(document, dict)
    error = document["error"]
    assert error["exit_code"] == code
    assert error["message"]
    return error


@pytest.mark.parametrize("style", [("-o", "json"), ("--json",)])
def test_unusable_input_prints_a_json_error(
    invoke: Any, tmp_path: Path, azure: Path, style: tuple[str, ...]
) -> None:
    short = tmp_path / "short.bin"
    short.write_bytes(b"not a report")
    result = invoke(tmp_path, "attestation", "verify", *_flags(azure, short, *style))
    assert result.code == 2
    error = _one_json_error(result.stdout, 2)
    assert error["kind"] == "unusable-input"
    assert "1184" in error["message"]


def test_rejection_prints_one_json_object_with_an_error(
    invoke: Any, tmp_path: Path, azure: Path
) -> None:
    flags = _flags(azure, None, "--at", "2031-01-01T00:00:00Z", "-o", "json")
    result = invoke(tmp_path, "attestation", "verify", *flags)
    assert result.code == 1
    assert _one_json_error(result.stdout, 1)["kind"] == "rejected"
    assert json.loads(result.stdout)["verified"] is False


@pytest.mark.parametrize(
    "extra", [("--at", "yesterday"), ("--product", "Naples"), ("--report", "/absent")]
)
def test_bad_options_print_a_json_error(
    invoke: Any, tmp_path: Path, azure: Path, extra: tuple[str, ...]
) -> None:
    # -o json before the bad option: the error document must not depend on the order.
    flags = ["-o", "json", *_flags(azure, None, *extra)]
    result = invoke(tmp_path, "attestation", "verify", *flags)
    assert result.code == 2
    assert _one_json_error(result.stdout, 2)["kind"] == "usage"


def _certificate_text(azure: Path) -> bytes:
    return (azure / "certchain.pem").read_bytes()


@pytest.mark.parametrize(
    "content",
    [
        lambda azure: bytes(1184),
        lambda azure: b"\xff" * 1184,
        lambda azure: bytes(range(256)) * 8,
        lambda azure: b"A" * 1184,  # base64 of fewer than 1184 bytes: used as raw bytes
        lambda azure: _certificate_text(azure),
        lambda azure: base64.b64encode(b"\x00" * 1300),
    ],
    ids=["zeros", "ones", "counting", "short-base64", "pem-text", "long-base64"],
)
def test_non_report_input_of_report_size_is_never_an_internal_error(
    invoke: Any, tmp_path: Path, azure: Path, content: Any
) -> None:
    # Was: exit 1 "unexpected internal error" for some >= 1184-byte inputs that are no report.
    path = tmp_path / "input.bin"
    path.write_bytes(content(azure))
    result = invoke(tmp_path, "attestation", "verify", *_flags(azure, path, "-o", "json"))
    assert "unexpected internal error" not in result.stderr
    assert result.code == _library(*_flags(azure, path))
    assert result.code in (1, 2)
    _one_json_error(result.stdout, result.code)
