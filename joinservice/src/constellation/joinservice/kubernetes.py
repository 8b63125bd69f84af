"""The one place that talks to the Kubernetes API.

Three things live in the cluster on the JoinService's behalf:

- **Bootstrap tokens** (``kube-system/bootstrap-token-<id>`` Secrets, TTL 15 minutes), created
  by ``bootstrap_token.BootstrapTokens`` (re-exported here so the service wires all API access
  from this module); a joining kubelet authenticates with one as ``system:bootstrap:<id>``.
- **Disk bindings** (``disk-binding-<uuid>``): a disk UUID, once handed to one attested node
  identity, is never handed to another (DESIGN.md §9: in the Go version any attested node
  could ask for any disk key).
- **Node names** (``constellation-node-<name>``): a node name, once joined under by one
  attested identity, is never certified for another, so no machine can take over a node's
  name (and with it the node's objects under the Node authorizer).

Both kinds of record are one mechanism, ``IdentityBindings``: one immutable ConfigMap per
subject, named after it, holding the identity (the hex SHA-256 of the node's attestation key)
and *created*, never updated. The API server's create-if-absent semantics (409
AlreadyExists) make concurrent JoinService replicas agree on a single winner without locks or
leader election: whoever loses the create reads the record back and is confirmed (same
identity) or refused (another one). ``confirm`` only reads: a rejoin may re-use a binding, it
can never start one. Only an operator deletes a record (a machine really replaced).

Every call carries a request timeout; API failures surface as ``UpstreamError``
(UNAVAILABLE), a record of another identity as a ``RefusedError`` subclass (PERMISSION_DENIED).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from constellation.attestation.errors import Failure
from constellation.joinservice.bootstrap_token import BootstrapTokens
from constellation.joinservice.errors import (
    ConfigError,
    DiskBindingError,
    NodeNameTakenError,
    RefusedError,
    UnknownDiskError,
    UpstreamError,
)
from constellation.joinservice.tickets import Binding, BindingOutcome

__all__ = [
    "BootstrapTokens",
    "DiskBindings",
    "IdentityBindings",
    "NodeNames",
    "binding_name",
    "core_api",
]

BINDING_PREFIX: Final = "disk-binding-"
BINDING_LABEL: Final = "join.constellation.io/disk-binding"
NODE_NAME_PREFIX: Final = "constellation-node-"
NODE_NAME_LABEL: Final = "join.constellation.io/node-name"
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "constellation-joinservice"
DISK_UUID_KEY: Final = "diskUUID"
NODE_NAME_KEY: Final = "nodeName"
IDENTITY_KEY: Final = "nodeIdentity"
REQUEST_TIMEOUT: Final = 10.0
#: The longest Kubernetes object name (a DNS-1123 subdomain).
MAX_OBJECT_NAME: Final = 253
# Identities are lowercase hex SHA-256 digests of the AK (see tickets.node_identity).
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


@dataclass(frozen=True)
class BindingKind:
    """What one kind of identity record is called, stored as, and refused with.

    ``taken_check``/``taken_error``: the subject is bound to another identity;
    ``unknown_check``/``unknown_error``: ``confirm`` found no record at all.
    """

    noun: str
    prefix: str
    label: str
    subject_key: str
    taken_check: str
    taken_error: type[RefusedError]
    unknown_check: str
    unknown_error: type[RefusedError]


DISK: Final = BindingKind(
    noun="disk",
    prefix=BINDING_PREFIX,
    label=BINDING_LABEL,
    subject_key=DISK_UUID_KEY,
    taken_check="disk.bound_elsewhere",
    taken_error=DiskBindingError,
    unknown_check="disk.unknown",
    unknown_error=UnknownDiskError,
)
NODE_NAME: Final = BindingKind(
    noun="node name",
    prefix=NODE_NAME_PREFIX,
    label=NODE_NAME_LABEL,
    subject_key=NODE_NAME_KEY,
    taken_check="node.name_taken",
    taken_error=NodeNameTakenError,
    unknown_check="node.unknown",
    unknown_error=RefusedError,
)


def binding_name(disk_uuid: str) -> str:
    """Object name of a disk's binding. The UUID is validated by the caller (tickets)."""
    return BINDING_PREFIX + disk_uuid.lower()


class IdentityBindings:
    """Create-if-absent store of ``subject -> attested node identity`` for one ``kind``."""

    def __init__(self, core: k8s.CoreV1Api, *, namespace: str, kind: BindingKind) -> None:
        self._core = core
        self._namespace = namespace
        self.kind = kind

    def canonical(self, subject: str) -> str:
        """The form a subject is stored and compared in (the caller validated its syntax)."""
        return subject

    def object_name(self, subject: str) -> str:
        name = self.kind.prefix + self.canonical(subject)
        if len(name) > MAX_OBJECT_NAME:
            raise ValueError(f"{self.kind.noun} is too long for a Kubernetes object name")
        return name

    def bind(self, subject: str, identity: str) -> Binding:
        """Bind ``subject`` to ``identity`` or confirm an existing equal binding.

        Raises the kind's ``taken_error`` when the subject is bound to a different identity.
        """
        if not _IDENTITY.fullmatch(identity):
            raise ValueError("node identity must be a lowercase hex SHA-256 digest")
        subject = self.canonical(subject)
        body = k8s.V1ConfigMap(
            metadata=k8s.V1ObjectMeta(
                name=self.object_name(subject),
                labels={self.kind.label: "true", MANAGED_BY_LABEL: MANAGED_BY},
            ),
            data={self.kind.subject_key: subject, IDENTITY_KEY: identity},
            immutable=True,
        )
        action = f"create {self.kind.noun} binding"
        try:
            self._core.create_namespaced_config_map(
                self._namespace, body, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as err:
            if err.status != 409:
                raise _upstream(action, err) from None
        except HTTPError as err:
            raise _upstream(action, err) from None
        else:
            return Binding(subject, identity, BindingOutcome.CREATED)
        bound = self.lookup(subject)
        if bound is None:
            # Created by someone else a moment ago and already gone: only an operator deletes
            # bindings, so refuse rather than race them.
            raise UpstreamError(
                f"{self.kind.noun} binding for {subject} changed while it was being read; "
                "retry the request"
            )
        return self._same(subject, bound, identity)

    def confirm(self, subject: str, identity: str) -> Binding:
        """Confirm that ``subject`` is bound to ``identity``; never create a binding.

        Raises the kind's ``unknown_error`` when there is no binding and its ``taken_error``
        when the binding names another identity.
        """
        subject = self.canonical(subject)
        bound = self.lookup(subject)
        if bound is None:
            raise self.kind.unknown_error(
                [
                    Failure(
                        check=self.kind.unknown_check,
                        expected=f"{self.kind.noun} {subject} bound to node identity "
                        f"{identity} by an earlier join",
                        actual="no binding",
                        detail=f"only a {self.kind.noun} handed out by a join ticket can be "
                        "asked for again; a new machine must join",
                    )
                ],
                subject=f"{self.kind.noun} {subject}",
            )
        return self._same(subject, bound, identity)

    def lookup(self, subject: str) -> str | None:
        """The identity a subject is bound to, or None when it is unbound."""
        name = self.object_name(subject)
        action = f"read {self.kind.noun} binding"
        try:
            obj: Any = self._core.read_namespaced_config_map(
                name, self._namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise _upstream(action, err) from None
        except HTTPError as err:
            raise _upstream(action, err) from None
        data = obj.data or {}
        identity = data.get(IDENTITY_KEY)
        if not isinstance(identity, str) or not _IDENTITY.fullmatch(identity):
            raise UpstreamError(
                f"{self.kind.noun} binding {name} is malformed (no valid {IDENTITY_KEY}); an "
                "operator must inspect or delete it"
            )
        return identity

    def _same(self, subject: str, bound: str, identity: str) -> Binding:
        if bound != identity:
            raise self.kind.taken_error(
                [
                    Failure(
                        check=self.kind.taken_check,
                        expected=f"node identity {bound}",
                        actual=f"node identity {identity}",
                        detail=f"{self.kind.noun} {subject} belongs to another attested node; "
                        f"if that machine was replaced, an operator deletes ConfigMap "
                        f"{self._namespace}/{self.object_name(subject)}",
                    )
                ],
                subject=f"{self.kind.noun} {subject}",
            )
        return Binding(subject, identity, BindingOutcome.CONFIRMED)


class DiskBindings(IdentityBindings):
    """Disk UUID (lowercase) -> the identity its key was first handed to."""

    def __init__(self, core: k8s.CoreV1Api, *, namespace: str) -> None:
        super().__init__(core, namespace=namespace, kind=DISK)

    def canonical(self, subject: str) -> str:
        return subject.lower()


class NodeNames(IdentityBindings):
    """Node name -> the identity that first joined under it.

    Names come from the verified platform identity (a DNS-1123 subdomain of at most
    ``tickets.MAX_NODE_NAME`` characters, which with the prefix still fits an object name).
    """

    def __init__(self, core: k8s.CoreV1Api, *, namespace: str) -> None:
        super().__init__(core, namespace=namespace, kind=NODE_NAME)


def _upstream(action: str, err: Exception) -> UpstreamError:
    if isinstance(err, ApiException):
        return UpstreamError(f"Kubernetes API: {action} failed: {err.status} {err.reason}")
    return UpstreamError(f"Kubernetes API: {action} failed: {type(err).__name__}")
