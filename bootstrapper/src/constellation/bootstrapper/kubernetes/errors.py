"""Errors of the Kubernetes component handling and the loopback control plane.

All derive from ``KubernetesError``, itself a ``BootstrapperError``, so the bootstrapper and
the CLI catch them with the rest of the node's errors. Messages name paths, component names and
public hashes; they never contain keys, tokens or certificate private keys.
"""

from __future__ import annotations

from constellation.bootstrapper.errors import BootstrapperError


class KubernetesError(BootstrapperError):
    """Root of the errors of ``constellation.bootstrapper.kubernetes``."""


class ComponentLockError(KubernetesError):
    """The components lock (or a per-cache hash record) is unreadable or breaks its schema."""


class ComponentMissingError(KubernetesError):
    """A pinned binary is not where it should be (not yet built or fetched)."""


class ComponentHashError(KubernetesError):
    """A binary's SHA-256 differs from the pinned or recorded one; it must not be installed.

    ``expected`` and ``actual`` are the hex digests (public values).
    """

    def __init__(self, name: str, path: str, expected: str, actual: str) -> None:
        self.name = name
        self.path = path
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{name} at {path}: SHA-256 {actual} does not match the pinned {expected}; "
            "the file was not installed. Rebuild or re-fetch it, and only after checking why "
            "it changed record the new hash explicitly (hack/kubernetes-components record)"
        )


class ControlPlaneError(KubernetesError):
    """Root of the errors while bringing up or tearing down the loopback control plane."""


class ControlPlaneStartError(ControlPlaneError):
    """A control-plane step (kubeadm phase, etcd, kube-apiserver) failed; see its log file."""


class ControlPlaneTimeoutError(ControlPlaneError):
    """The control plane did not become ready within the bound; see the log files."""
