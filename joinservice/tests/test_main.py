"""The command: help with examples, and a bad configuration ends with a log line, not a
traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
