"""The command: help with examples, and a bad configuration ends with a log line, not a
traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from constellation.cli.servicepki import issue_service_pki
from constellation.joinservice.__main__ import main


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert "constellation-joinservice --join-config-dir" in out


def test_bad_settings_exit_1_with_a_json_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "constellation.joinservice",
            "--join-config-dir",
            str(tmp_path / "missing"),
            "--keyservice-endpoint",
            "127.0.0.1:1",
            "--keyservice-ca-file",
            str(tmp_path / "ks" / "ca.crt"),
            "--keyservice-cert-file",
            str(tmp_path / "ks" / "tls.crt"),
            "--keyservice-key-file",
            str(tmp_path / "ks" / "tls.key"),
            "--ca-cert",
            str(tmp_path / "ca.crt"),
            "--ca-key",
            str(tmp_path / "ca.key"),
            "--api-server-endpoint",
            "127.0.0.1:6443",
            "--components-file",
            str(tmp_path / "components.json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = [json.loads(x) for x in result.stderr.splitlines() if x.startswith("{")]
    assert line["event"] == "joinservice.failed"
    assert "join-config directory" in line["error"]
    assert "KeyService client (--keyservice-ca-file)" in line["error"]


def test_keyservice_client_certificate_is_required(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The KeyService serves mutual TLS only: without the client files there is no JoinService."""
    with pytest.raises(SystemExit) as info:
        main(
            [
                *("--join-config-dir", str(tmp_path), "--keyservice-endpoint", "127.0.0.1:1"),
                *("--ca-cert", str(tmp_path / "ca.crt"), "--ca-key", str(tmp_path / "ca.key")),
                *("--api-server-endpoint", "127.0.0.1:6443"),
                *("--components-file", str(tmp_path / "components.json")),
            ]
        )
    assert info.value.code == 2
    err = capsys.readouterr().err
    for flag in ("--keyservice-ca-file", "--keyservice-cert-file", "--keyservice-key-file"):
        assert flag in err


def test_unusable_client_certificate_is_a_json_error(tmp_path: Path) -> None:
    """Files that exist but cannot authenticate: every failed check, no key material."""
    pki = issue_service_pki()
    join_config = tmp_path / "join-config"
    join_config.mkdir()
    for name in ("ca.crt", "ca.key", "components.json"):
        (tmp_path / name).write_bytes(b"x")
    ks = tmp_path / "ks"
    ks.mkdir()
    (ks / "ca.crt").write_bytes(pki.joinservice_client.ca_pem)
    (ks / "tls.crt").write_bytes(pki.joinservice_client.cert_pem)
    (ks / "tls.key").write_bytes(pki.keyservice_server.key_pem)  # the wrong key
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "constellation.joinservice",
            *("--join-config-dir", str(join_config), "--keyservice-endpoint", "127.0.0.1:1"),
            *("--keyservice-ca-file", str(ks / "ca.crt")),
            *("--keyservice-cert-file", str(ks / "tls.crt")),
            *("--keyservice-key-file", str(ks / "tls.key")),
            *("--ca-cert", str(tmp_path / "ca.crt"), "--ca-key", str(tmp_path / "ca.key")),
            *("--api-server-endpoint", "127.0.0.1:6443"),
            *("--components-file", str(tmp_path / "components.json")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    (line,) = [json.loads(x) for x in result.stderr.splitlines() if x.startswith("{")]
    assert line["event"] == "joinservice.failed"
    assert "keyservice.key: expected the private key of the client certificate" in line["error"]
    assert pki.keyservice_server.key_pem.decode().splitlines()[1] not in result.stderr


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("3", "BURST/SECONDS"), ("0/20", "burst >= 1"), ("3/-1", "positive"), ("x/1", "invalid")],
)
def test_a_malformed_ticket_rate_is_a_usage_error(
    value: str, fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--identity-ticket-rate", value, "--help"])
    assert info.value.code == 2
    assert fragment in capsys.readouterr().err


def test_ticket_rates_parse_from_the_command_line() -> None:
    from constellation.attestation.ratelimit import Rate
    from constellation.joinservice.__main__ import parse_args

    args = parse_args(
        [
            *("--join-config-dir", "j", "--keyservice-endpoint", "k:1"),
            *("--keyservice-ca-file", "a", "--keyservice-cert-file", "b"),
            *("--keyservice-key-file", "c", "--ca-cert", "d", "--ca-key", "e"),
            *("--api-server-endpoint", "f:1", "--components-file", "g"),
            *("--identity-ticket-rate", "5/10", "--ticket-rate", "50/0.05"),
        ]
    )
    assert args.identity_ticket_rate == Rate(5, 10.0)
    assert args.ticket_rate == Rate(50, 0.05)
