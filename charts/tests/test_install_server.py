"""The charts' objects pass the real API server's validation and admission.

`helm template` plus offline schema validation catches most mistakes. Here the rendered objects
go to the pinned kube-apiserver as a server-side dry run (`kubectl apply --dry-run=server`):
the server runs its own validation and admission on every object without creating anything.
(`helm install --dry-run=server` would not do this: it only lets templates look up live
objects, the objects themselves are never sent.)
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.kube

CHARTS = Path(__file__).resolve().parents[1]
CHART_NAMES = ("keyservice", "joinservice", "verificationservice")


def _server_dry_run(
    helm: Path,
    kubectl: Path,
    control_plane: Any,
    home: Path,
    chart: str,
    namespace: str = "kube-system",
) -> subprocess.CompletedProcess[str]:
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    rendered = subprocess.run(
        [str(helm), "template", chart, str(CHARTS / chart), "--namespace", namespace],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=env,
    ).stdout
    return subprocess.run(
        [
            str(kubectl),
            "--kubeconfig",
            str(control_plane.admin_kubeconfig),
            "apply",
            "--dry-run=server",
            "--namespace",
            namespace,
            "-f",
            "-",
        ],
        input=rendered,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


@pytest.mark.parametrize("chart", CHART_NAMES)
def test_chart_objects_pass_server_side_validation(
    helm: Path, kubectl_binary: Path, control_plane: Any, chart: str, tmp_path: Path
) -> None:
    result = _server_dry_run(helm, kubectl_binary, control_plane, tmp_path, chart)
    assert result.returncode == 0, result.stderr
    assert "(server dry run)" in result.stdout
    assert "error" not in result.stderr.lower()


def test_server_side_dry_run_really_reaches_the_server(
    helm: Path, kubectl_binary: Path, control_plane: Any, tmp_path: Path
) -> None:
    """The keyservice chart renders for any namespace; only the server knows it is missing."""
    result = _server_dry_run(
        helm, kubectl_binary, control_plane, tmp_path, "keyservice", namespace="no-such-namespace"
    )
    assert result.returncode != 0
    assert 'namespaces "no-such-namespace" not found' in result.stderr
