"""The operator command ``python -m constellation.attestation snp verify``: exit codes 0/1/2,
raw and base64 reports, JSON output, and no traceback on bad input."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from constellation.attestation.__main__ import main

VECTORS = Path(__file__).resolve().parents[3].parent / "shared" / "vectors" / "azure-sev-snp"
AT = "2025-06-01T00:00:00Z"


@pytest.fixture(scope="module")
def azure() -> Path:
    if not (VECTORS / "attestation.bin").is_file():
        pytest.skip(f"real Azure SEV-SNP vectors not found at {VECTORS} (../shared/vectors absent)")
    return VECTORS


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out)
    return code, out.getvalue()


def args(azure: Path, report: Path | None = None, *extra: str) -> list[str]:
    return [
        "snp",
        "verify",
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


def test_verified_report_prints_fields(azure):
    code, text = run(*args(azure))
    assert code == 0
    assert "verified: Milan" in text
    assert "measurement: 5677f1de87289e7ad2c7e99c805d0468" in text


def test_json_output_and_base64_report(azure, tmp_path):
    encoded = tmp_path / "report.b64"
    encoded.write_bytes(base64.encodebytes((azure / "attestation.bin").read_bytes()))
    code, text = run(*args(azure, encoded, "--json"))
    assert code == 0
    document = json.loads(text)
    assert document["verified"] is True
    assert document["product"] == "Milan"
    assert document["report"]["reported_tcb"]["microcode"] == 93
    assert document["report"]["policy"] == "0x3001f"


def test_rejection_lists_every_failure(azure, tmp_path):
    tampered = bytearray((azure / "attestation.bin").read_bytes())
    tampered[0x30] = 1  # VMPL 1: bad signature and bad VMPL
    path = tmp_path / "tampered.bin"
    path.write_bytes(bytes(tampered))
    code, text = run(*args(azure, path, "--at", "2031-01-01T00:00:00+00:00"))
    assert code == 1
    assert "3 failed check(s)" in text
    for check in ("snp.vcek.validity", "snp.report.signature", "snp.vmpl"):
        assert check in text
    code, text = run(*args(azure, path, "--json"))
    assert code == 1
    assert [f["check"] for f in json.loads(text)["failures"]] == [
        "snp.report.signature",
        "snp.vmpl",
    ]


def test_missing_chain_is_a_rejection(azure):
    code, text = run(
        "snp",
        "verify",
        "--report",
        str(azure / "attestation.bin"),
        "--signer",
        str(azure / "vcek.cert"),
        "--at",
        AT,
    )
    assert code == 1
    assert "snp.ask.missing" in text


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"short", "1184 bytes, got 5"), (b"", "got 0"), (base64.b64encode(b"x" * 100), "got ")],
)
def test_unusable_report(azure, tmp_path, capsys, content, message):
    path = tmp_path / "report.bin"
    path.write_bytes(content)
    code, text = run(*args(azure, path))
    assert code == 2
    assert text == ""
    assert message in capsys.readouterr().err


def test_unusable_files_and_options(azure, tmp_path, capsys):
    assert run(*args(azure, tmp_path / "missing.bin"))[0] == 2
    assert "cannot read report" in capsys.readouterr().err
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"garbage")
    code, _ = run(
        "snp",
        "verify",
        "--report",
        str(azure / "attestation.bin"),
        "--signer",
        str(garbage),
        "--at",
        AT,
    )
    assert code == 2
    assert "not a DER X.509 certificate" in capsys.readouterr().err
    assert run(*args(azure, None, "--at", "yesterday"))[0] == 2
    assert "ISO-8601" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        run("snp", "verify")
    assert info.value.code == 2


def test_module_entry_point_without_traceback(tmp_path):
    bogus = tmp_path / "x"
    bogus.write_bytes(b"\x00" * 10)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "constellation.attestation",
            "snp",
            "verify",
            "--report",
            str(bogus),
            "--signer",
            str(bogus),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert "error:" in completed.stderr
