"""Driving the installed ``constellation`` command as a subprocess, for end-to-end tests.

The e2e suites run the CLI exactly as an admin does (a separate process, stdin not a terminal)
on a real mini cluster. :func:`mini_cluster` brings one up and guarantees ``mini down`` even
when a test fails, so no swtpm, etcd or kube-apiserver outlives the suite; it skips, with the
reason, on a machine that lacks what a mini cluster needs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from constellation.cli.mini.cluster import INIT_COMPONENTS, JOIN_COMPONENTS, kubernetes_binaries
from constellation.cli.mini.errors import MiniError

CLI = Path(sys.executable).parent / "constellation"
UP_TIMEOUT_S = 600
COMMAND_TIMEOUT_S = 300


@dataclass(frozen=True)
class Completed:
    """A finished CLI process."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def run_cli(workspace: Path, *args: str, timeout: float = COMMAND_TIMEOUT_S) -> Completed:
    """Run ``constellation -C workspace args`` as a subprocess, stdin not a terminal."""
    process = subprocess.run(
        [str(CLI), "-C", str(workspace), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Completed(process.returncode, process.stdout, process.stderr)


@dataclass(frozen=True)
class UpCluster:
    """A mini cluster that ``mini up`` reported ready."""

    workspace: Path
    summary: dict[str, Any]
    kubectl: Path


def missing_for_mini() -> str | None:
    """Why this machine cannot run a mini cluster, or None if it can."""
    if not CLI.exists():
        return f"{CLI} is not installed (uv sync)"
    for tool in ("swtpm", "cryptsetup"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (hack/setup)"
    try:
        kubernetes_binaries(INIT_COMPONENTS + JOIN_COMPONENTS)
    except MiniError as err:
        return f"pinned Kubernetes binaries missing: {err}"
    return None


@contextmanager
def mini_cluster(workspace: Path, *, workers: int) -> Iterator[UpCluster]:
    """``mini up`` in ``workspace``; ``mini down`` on exit, whatever happened in between."""
    missing = missing_for_mini()
    if missing:
        pytest.skip(missing)
    _, installed = kubernetes_binaries(INIT_COMPONENTS + JOIN_COMPONENTS)
    up = run_cli(
        workspace, "mini", "up", "--workers", str(workers), "-o", "json", timeout=UP_TIMEOUT_S
    )
    try:
        assert up.code == 0, up.stderr[-4000:]
        yield UpCluster(workspace, up.json(), installed.path("kubectl"))
    finally:
        down = run_cli(workspace, "mini", "down")
        assert down.code == 0, down.stderr[-2000:]
