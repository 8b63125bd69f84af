from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest

from constellation.cli.root import root


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = [prefix]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _all_commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


@pytest.mark.parametrize("path", _all_commands(root), ids=lambda p: " ".join(p) or "root")
def test_every_help_has_examples(invoke: Any, tmp_path: Path, path: tuple[str, ...]) -> None:
    result = invoke(tmp_path, *path, "--help")
    assert result.code == 0
    assert "Examples:" in result.stdout
    assert "constellation " in result.stdout.split("Examples:")[1]


def test_usage_error_exits_2(invoke: Any, tmp_path: Path) -> None:
    result = invoke(tmp_path, "config", "generate", "--no-such-flag")
    assert result.code == 2
    assert "No such option" in result.stderr
    assert result.stdout == ""


def test_unknown_command_exits_2(invoke: Any, tmp_path: Path) -> None:
    assert invoke(tmp_path, "frobnicate").code == 2


def test_project_error_is_a_readable_message_with_next_step(invoke: Any, tmp_path: Path) -> None:
    result = invoke(tmp_path, "verify")
    assert result.code == 1
    assert result.stderr.startswith("Error: ")
    assert "Next: run `constellation config generate`" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_debug_adds_the_traceback(invoke: Any, tmp_path: Path) -> None:
    result = invoke(tmp_path, "--debug", "verify")
    assert result.code == 1
    assert "Traceback" in result.stderr
    assert "Error: " in result.stderr


def test_generate_writes_config_and_logs_to_stderr(invoke: Any, tmp_path: Path) -> None:
    result = invoke(tmp_path, "config", "generate")
    assert result.code == 0
    assert result.stdout == ""
    assert "Wrote" in result.stderr
    assert (tmp_path / "constellation-conf.yaml").exists()
    before = (tmp_path / "constellation-conf.yaml").read_bytes()
    again = invoke(tmp_path, "config", "generate", "azure")
    assert again.code == 1
    assert "--force" in again.stderr
    assert (tmp_path / "constellation-conf.yaml").read_bytes() == before
    assert invoke(tmp_path, "config", "generate", "azure", "--force").code == 0
    assert b"azure-sev-snp" in (tmp_path / "constellation-conf.yaml").read_bytes()


def test_version_json_goes_to_stdout(invoke: Any, tmp_path: Path) -> None:
    import json

    result = invoke(tmp_path, "version", "-o", "json")
    assert result.code == 0
    assert json.loads(result.stdout)["version"]


def test_console_script_exit_codes(tmp_path: Path) -> None:
    """The installed entry point behaves like the in-process one (no traceback, codes 0/1/2)."""
    command = [sys.executable, "-m", "constellation.cli", "-C", str(tmp_path)]
    ok = subprocess.run([*command, "version"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    failed = subprocess.run([*command, "verify"], capture_output=True, text=True, check=False)
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    usage = subprocess.run([*command, "--bogus"], capture_output=True, text=True, check=False)
    assert usage.returncode == 2


def test_library_logs_go_to_stderr(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import structlog

    from constellation.cli.root import run

    assert run(["-C", str(tmp_path), "--debug", "version", "-o", "json"]) == 0
    capsys.readouterr()
    structlog.get_logger("constellation.test").debug("probe.event")
    captured = capsys.readouterr()
    assert "probe.event" in captured.err
    assert captured.out == ""


def test_unexpected_exception_is_one_line_without_its_text(
    invoke: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from constellation.cli.commands import version

    def broken(package: str) -> str:
        raise RuntimeError("internal detail 0123456789abcdef")

    monkeypatch.setattr(version, "_version", broken)
    result = invoke(tmp_path, "version")
    assert result.code == 1
    assert "unexpected internal error (RuntimeError)" in result.stderr
    assert "0123456789abcdef" not in result.stderr
    assert "Traceback" not in result.stderr
    debug = invoke(tmp_path, "--debug", "version")
    assert debug.code == 1
    assert "Traceback" in debug.stderr
    assert "0123456789abcdef" in debug.stderr


# -- -o json: every failure is one JSON object {"error": {...}} on stdout, exit code unchanged.


def test_project_error_under_json_is_one_error_object(invoke: Any, tmp_path: Path) -> None:
    import json

    result = invoke(tmp_path, "verify", "-o", "json")
    assert result.code == 1
    error = json.loads(result.stdout)["error"]
    assert error["exit_code"] == 1
    assert error["kind"] == "failed"
    assert "constellation config generate" in error["hint"]
    assert "Error: " in result.stderr  # people still read stderr


def test_usage_error_under_json_is_one_error_object(invoke: Any, tmp_path: Path) -> None:
    import json

    result = invoke(tmp_path, "version", "--output=json", "--no-such-flag")
    assert result.code == 2
    error = json.loads(result.stdout)["error"]
    assert (error["kind"], error["exit_code"]) == ("usage", 2)
    assert "no-such-flag" in error["message"]


def test_unexpected_exception_under_json_hides_its_text(
    invoke: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from constellation.cli.commands import version

    def broken(package: str) -> str:
        raise RuntimeError("internal detail 0123456789abcdef")

    monkeypatch.setattr(version, "_version", broken)
    result = invoke(tmp_path, "version", "-o", "json")
    assert result.code == 1
    error = json.loads(result.stdout)["error"]
    assert error["kind"] == "internal"
    assert error["type"] == "RuntimeError"
    assert "0123456789abcdef" not in result.stdout


def test_text_output_keeps_stdout_empty_on_failure(invoke: Any, tmp_path: Path) -> None:
    assert invoke(tmp_path, "verify", "-o", "text").stdout == ""
    # "json" as the value of another option is not a request for JSON output.
    result = invoke(tmp_path, "config", "generate", "--", "-o", "json")
    assert result.stdout == ""
