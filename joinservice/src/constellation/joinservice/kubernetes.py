"""The one place that talks to the Kubernetes API.

Two things live in the cluster on the JoinService's behalf:

- **Bootstrap tokens** (``kube-system/bootstrap-token-<id>`` Secrets, TTL 15 minutes), created
  by ``bootstrap_token.BootstrapTokens`` (re-exported here so the service wires all API access
  from this module); a joining kubelet authenticates with one as ``system:bootstrap:<id>``.
- **Disk bindings**: a disk UUID, once handed to one attested node identity, is never handed to
  another (DESIGN.md §9: in the Go version any attested node could ask for any disk key). A
  binding is one immutable ConfigMap per UUID, named after the UUID and *created*, never
  updated: the API server's create-if-absent semantics (409 AlreadyExists) make concurrent
  JoinService replicas agree on a single winner without locks or leader election.

Every call carries a request timeout; API failures surface as ``UpstreamError`` (UNAVAILABLE),
a binding to another identity as ``DiskBindingError`` (PERMISSION_DENIED).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from constellation.attestation.errors import Failure
from constellation.joinservice.bootstrap_token import BootstrapTokens
from constellation.joinservice.errors import ConfigError, DiskBindingError, UpstreamError
from constellation.joinservice.tickets import BindingOutcome, DiskBinding

__all__ = ["BootstrapTokens", "DiskBindings", "core_api"]

BINDING_PREFIX: Final = "disk-binding-"
BINDING_LABEL: Final = "join.constellation.io/disk-binding"
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "constellation-joinservice"
DISK_UUID_KEY: Final = "diskUUID"
IDENTITY_KEY: Final = "nodeIdentity"
REQUEST_TIMEOUT: Final = 10.0
# Identities are lowercase hex SHA-256 digests (see tickets.node_identity).
_IDENTITY = re.compile(r"[0-9a-f]{64}")


def core_api(kubeconfig: Path | None) -> k8s.CoreV1Api:
    """A CoreV1 client from a kubeconfig file, or from the pod's service account if None."""
    from kubernetes import config as k8s_config

    try:
        if kubeconfig is None:
            k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
            return k8s.CoreV1Api()
        api_client = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig)
        )
    except (k8s_config.ConfigException, OSError, ValueError) as exc:
        source = "in-cluster service account" if kubeconfig is None else str(kubeconfig)
        raise ConfigError(f"cannot configure the Kubernetes client from {source}: {exc}") from None
    return k8s.CoreV1Api(api_client)


def binding_name(disk_uuid: str) -> str:
    """Object name of a disk's binding. The UUID is validated by the caller (tickets)."""
    return BINDING_PREFIX + disk_uuid.lower()


class DiskBindings:
    """Create-if-absent store of ``disk UUID -> attested node identity``."""

    def __init__(self, core: k8s.CoreV1Api, *, namespace: str) -> None:
        self._core = core
        self._namespace = namespace

    def bind(self, disk_uuid: str, identity: str) -> DiskBinding:
        """Bind ``disk_uuid`` to ``identity`` or confirm an existing equal binding.

        Raises ``DiskBindingError`` when the disk is bound to a different identity.
        """
        if not _IDENTITY.fullmatch(identity):
            raise ValueError("node identity must be a lowercase hex SHA-256 digest")
        uuid = disk_uuid.lower()
        body = k8s.V1ConfigMap(
            metadata=k8s.V1ObjectMeta(
                name=binding_name(uuid),
                labels={BINDING_LABEL: "true", MANAGED_BY_LABEL: MANAGED_BY},
            ),
            data={DISK_UUID_KEY: uuid, IDENTITY_KEY: identity},
            immutable=True,
        )
        try:
            self._core.create_namespaced_config_map(
                self._namespace, body, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as err:
            if err.status != 409:
                raise _upstream("create disk binding", err) from None
        except HTTPError as err:
            raise _upstream("create disk binding", err) from None
        else:
            return DiskBinding(uuid, identity, BindingOutcome.CREATED)
        bound = self.lookup(uuid)
        if bound is None:
            # Created by someone else a moment ago and already gone: only an operator deletes
            # bindings, so refuse rather than race them.
            raise UpstreamError(
                f"disk binding for {uuid} changed while it was being read; retry the request"
            )
        if bound != identity:
            raise DiskBindingError(
                [
                    Failure(
                        check="disk_binding",
                        expected=f"node identity {bound}",
                        actual=f"node identity {identity}",
                        detail=f"disk {uuid} was issued to another attested node",
                    )
                ],
                subject=f"disk {uuid}",
            )
        return DiskBinding(uuid, identity, BindingOutcome.CONFIRMED)

    def lookup(self, disk_uuid: str) -> str | None:
        """The identity a disk is bound to, or None when it is unbound."""
        try:
            obj: Any = self._core.read_namespaced_config_map(
                binding_name(disk_uuid), self._namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise _upstream("read disk binding", err) from None
        except HTTPError as err:
            raise _upstream("read disk binding", err) from None
        data = obj.data or {}
        identity = data.get(IDENTITY_KEY)
        if not isinstance(identity, str) or not _IDENTITY.fullmatch(identity):
            raise UpstreamError(
                f"disk binding {binding_name(disk_uuid)} is malformed (no valid "
                f"{IDENTITY_KEY}); an operator must inspect or delete it"
            )
        return identity


def _upstream(action: str, err: Exception) -> UpstreamError:
    if isinstance(err, ApiException):
        return UpstreamError(f"Kubernetes API: {action} failed: {err.status} {err.reason}")
    return UpstreamError(f"Kubernetes API: {action} failed: {type(err).__name__}")
