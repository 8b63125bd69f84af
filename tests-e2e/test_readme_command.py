"""The README's main command as a newcomer runs it: ``hack/mini-up`` from a shell whose PATH
has neither uv nor the workspace's virtual environment (``hack/setup`` installs uv into
~/.local/bin, which a fresh login shell does not list). It must end with the verified cluster
ID and ``kubectl get nodes``; a second run verifies the running cluster instead of making a
new one."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from pathlib import Path

import pytest

from constellation.cli.testing import CLI, UP_TIMEOUT_S, missing_for_mini, run_cli

REPO = Path(__file__).resolve().parents[1]
MINI_UP = REPO / "hack" / "mini-up"
NODES = ("mini-cp-0", "mini-worker-0", "mini-worker-1")

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.swtpm, pytest.mark.kube]


def _fresh_shell_env() -> dict[str, str]:
    hidden = {str(Path.home() / ".local" / "bin"), str(CLI.parent)}
    path = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and d not in hidden]
    unset = ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["PATH"] = os.pathsep.join(path)
    return env


def _mini_up(workspace: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MINI_UP), str(workspace)],
        env=_fresh_shell_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=UP_TIMEOUT_S,
        check=False,
    )


def _cluster_id(stdout: str) -> bytes:
    match = re.search(r"^Verified cluster ID: (\S+)$", stdout, re.MULTILINE)
    assert match is not None, stdout[-2000:]
    return base64.b64decode(match.group(1), validate=True)


def test_mini_up_script_verifies_and_shows_the_nodes_then_reuses_the_cluster(
    tmp_path: Path,
) -> None:
    missing = missing_for_mini()
    if missing:
        pytest.skip(missing)
    workspace = tmp_path / "readme-workspace"
    try:
        first = _mini_up(workspace)
        assert first.returncode == 0, first.stderr[-4000:]
        cluster_id = _cluster_id(first.stdout)
        assert len(cluster_id) == 32
        table = first.stdout[first.stdout.index("Verified cluster ID") :]
        assert re.search(r"^NAME\s+STATUS\s+ROLES", table, re.MULTILINE), table
        for node in NODES:
            assert re.search(rf"^{node}\s", table, re.MULTILINE), table

        again = _mini_up(workspace)
        assert again.returncode == 0, again.stderr[-4000:]
        assert "already up" in again.stderr
        assert _cluster_id(again.stdout) == cluster_id
    finally:
        if (workspace / "mini").exists():
            down = run_cli(workspace, "mini", "down")
            assert down.code == 0, down.stderr[-2000:]
