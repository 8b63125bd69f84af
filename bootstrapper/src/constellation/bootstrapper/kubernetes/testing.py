"""pytest fixtures: a real loopback control plane for every component's tests.

Registered in the repository's root ``conftest.py``. Fixtures:

* ``kubernetes_components`` (session): the pinned control-plane binaries from the cache, each
  checked against its recorded SHA-256 (``helm_binary`` and ``kubectl_binary`` likewise).
  Missing binaries skip the test with the command that provides them; a hash mismatch is a
  test *error*, never a skip.
* ``control_plane`` (session): a started :class:`ControlPlane` (etcd, kube-apiserver,
  kube-controller-manager) in a temporary directory; stopped by PID at the end of the session,
  also when tests fail.
* ``kube_client``: a ``kubernetes.client.ApiClient`` authenticated with ``admin.conf``.

The lock is found from ``$CONSTELLATION_K8S_LOCK`` or by walking up from this file (editable
install in the workspace) or the current directory to ``hack/kubernetes-components.lock.json``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from constellation.bootstrapper.kubernetes.components import (
    ComponentLock,
    InstalledComponents,
    default_cache_dir,
    load_lock,
    verified_components,
)
from constellation.bootstrapper.kubernetes.controlplane import ControlPlane, ControlPlaneBinaries
from constellation.bootstrapper.kubernetes.errors import ComponentMissingError

LOCK_ENV = "CONSTELLATION_K8S_LOCK"
LOCK_RELATIVE = Path("hack") / "kubernetes-components.lock.json"
ENSURE_HINT = "uv run --no-sync hack/kubernetes-components ensure"
CONTROL_PLANE_COMPONENTS = ("kubeadm", "etcd", "kube-apiserver", "kube-controller-manager")


def find_lock() -> Path | None:
    """Locate the components lock of the checkout these tests run from."""
    override = os.environ.get(LOCK_ENV)
    if override:
        return Path(override)
    for start in (Path(__file__).resolve(), Path.cwd().resolve()):
        for parent in (start, *start.parents):
            candidate = parent / LOCK_RELATIVE
            if candidate.is_file():
                return candidate
    return None


@pytest.fixture(scope="session")
def kubernetes_lock() -> ComponentLock:
    path = find_lock()
    if path is None:
        pytest.skip(f"no {LOCK_RELATIVE} found (set ${LOCK_ENV}); Kubernetes tests need it")
    return load_lock(path)


def _verified(lock: ComponentLock, names: tuple[str, ...]) -> InstalledComponents:
    directory = default_cache_dir(lock.kubernetes_version)
    try:
        return verified_components(lock, directory, names)
    except ComponentMissingError as err:
        pytest.skip(f"pinned Kubernetes binaries missing ({err}); run `{ENSURE_HINT}`")


@pytest.fixture(scope="session")
def kubernetes_components(kubernetes_lock: ComponentLock) -> InstalledComponents:
    return _verified(kubernetes_lock, CONTROL_PLANE_COMPONENTS)


@pytest.fixture(scope="session")
def helm_binary(kubernetes_lock: ComponentLock) -> Path:
    """The pinned, hash-checked helm client."""
    return _verified(kubernetes_lock, ("helm",)).path("helm")


@pytest.fixture(scope="session")
def kubectl_binary(kubernetes_lock: ComponentLock) -> Path:
    """The pinned, hash-checked kubectl."""
    return _verified(kubernetes_lock, ("kubectl",)).path("kubectl")


@pytest.fixture(scope="session")
def control_plane(
    kubernetes_lock: ComponentLock,
    kubernetes_components: InstalledComponents,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ControlPlane]:
    directory = tmp_path_factory.mktemp("controlplane")
    plane = ControlPlane(
        directory,
        ControlPlaneBinaries.from_components(kubernetes_components),
        kubernetes_version=kubernetes_lock.kubernetes_version,
        unsafe_no_fsync=True,  # throw-away test data; fsync only costs time here
    )
    with plane:
        yield plane


@pytest.fixture
def kube_client(control_plane: ControlPlane) -> Iterator[object]:
    from kubernetes import config  # imported lazily: only Kubernetes tests pay for it

    client = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(control_plane.admin_kubeconfig)
    )
    try:
        yield client
    finally:
        client.close()
