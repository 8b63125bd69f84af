"""Kubernetes on a node: the pinned components and a loopback control plane.

* :mod:`.components` — the components lock, per-cache hash records, and :func:`verify_file`,
  the gate every binary passes (SHA-256 equal to the pinned value) before it is installed or run.
* :mod:`.controlplane` — :class:`ControlPlane`: kubeadm PKI + etcd + kube-apiserver
  (+ kube-controller-manager) as child processes on 127.0.0.1, always torn down by PID.
* :mod:`.testing` — pytest fixtures (``control_plane``, ``kube_client``) built on the above.
"""

from __future__ import annotations

from constellation.bootstrapper.kubernetes.components import (
    Component,
    ComponentLock,
    InstalledComponents,
    default_cache_dir,
    load_lock,
    sha256_file,
    verified_components,
    verify_file,
)
from constellation.bootstrapper.kubernetes.controlplane import (
    ControlPlane,
    ControlPlaneBinaries,
    Ports,
    kubeadm_config,
)
from constellation.bootstrapper.kubernetes.errors import (
    ComponentHashError,
    ComponentLockError,
    ComponentMissingError,
    ControlPlaneError,
    ControlPlaneStartError,
    ControlPlaneTimeoutError,
    KubernetesError,
)

__all__ = [
    "Component",
    "ComponentHashError",
    "ComponentLock",
    "ComponentLockError",
    "ComponentMissingError",
    "ControlPlane",
    "ControlPlaneBinaries",
    "ControlPlaneError",
    "ControlPlaneStartError",
    "ControlPlaneTimeoutError",
    "InstalledComponents",
    "KubernetesError",
    "Ports",
    "default_cache_dir",
    "kubeadm_config",
    "load_lock",
    "sha256_file",
    "verified_components",
    "verify_file",
]
