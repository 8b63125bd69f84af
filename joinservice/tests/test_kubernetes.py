"""Identity bindings (disks, node names) against a real API server: create-if-absent
decides races, once; confirm never creates."""

from __future__ import annotations

import hashlib
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes import client as k8s

from constellation.joinservice.errors import (
    DiskBindingError,
    NodeNameTakenError,
    UnknownDiskError,
    UpstreamError,
)
from constellation.joinservice.kubernetes import (
    BINDING_PREFIX,
    NODE_NAME_PREFIX,
    DiskBindings,
    NodeNames,
)
from constellation.joinservice.tickets import BindingOutcome

pytestmark = pytest.mark.kube

NAMESPACE = "kube-system"


def identity(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


@pytest.fixture
def bindings(kube_client: Any) -> DiskBindings:
    return DiskBindings(k8s.CoreV1Api(kube_client), namespace=NAMESPACE)


def test_bind_then_confirm(bindings: DiskBindings) -> None:
    disk = str(uuid.uuid4()).upper()
    first = bindings.bind(disk, identity("a"))
    assert first.outcome is BindingOutcome.CREATED
    assert first.subject == disk.lower()
    assert bindings.bind(disk.lower(), identity("a")).outcome is BindingOutcome.CONFIRMED
    assert bindings.lookup(disk) == identity("a")
    with pytest.raises(DiskBindingError) as info:
        bindings.bind(disk, identity("b"))
    (failure,) = info.value.failures
    assert failure.check == "disk.bound_elsewhere"
    assert identity("a") in failure.expected
    assert identity("b") in failure.actual


def test_concurrent_binders_agree_on_one_winner(bindings: DiskBindings) -> None:
    disk = str(uuid.uuid4())
    contenders = [identity(f"node-{i}") for i in range(8)]

    def attempt(who: str) -> str:
        try:
            return bindings.bind(disk, who).outcome.value
        except DiskBindingError:
            return "refused"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(attempt, contenders))
    assert outcomes.count("created") == 1
    assert outcomes.count("refused") == 7
    winner = contenders[outcomes.index("created")]
    assert bindings.lookup(disk) == winner


def test_confirm_never_creates(bindings: DiskBindings, kube_client: Any) -> None:
    disk = str(uuid.uuid4())
    with pytest.raises(UnknownDiskError) as info:
        bindings.confirm(disk, identity("a"))
    assert [f.check for f in info.value.failures] == ["disk.unknown"]
    with pytest.raises(k8s.ApiException) as missing:
        k8s.CoreV1Api(kube_client).read_namespaced_config_map(BINDING_PREFIX + disk, NAMESPACE)
    assert missing.value.status == 404
    bindings.bind(disk, identity("a"))
    assert bindings.confirm(disk.upper(), identity("a")).outcome is BindingOutcome.CONFIRMED
    with pytest.raises(DiskBindingError) as taken:
        bindings.confirm(disk, identity("b"))
    assert [f.check for f in taken.value.failures] == ["disk.bound_elsewhere"]


def test_node_names_are_bound_like_disks(kube_client: Any) -> None:
    core = k8s.CoreV1Api(kube_client)
    names = NodeNames(core, namespace=NAMESPACE)
    name = f"worker-{uuid.uuid4().hex[:8]}"
    assert names.bind(name, identity("a")).outcome is BindingOutcome.CREATED
    assert names.bind(name, identity("a")).outcome is BindingOutcome.CONFIRMED
    with pytest.raises(NodeNameTakenError) as info:
        names.bind(name, identity("b"))
    (failure,) = info.value.failures
    assert failure.check == "node.name_taken"
    assert identity("a") in failure.expected
    assert f"{NAMESPACE}/{NODE_NAME_PREFIX}{name}" in failure.detail
    record = core.read_namespaced_config_map(NODE_NAME_PREFIX + name, NAMESPACE)
    assert record.immutable is True
    assert record.data == {"nodeName": name, "nodeIdentity": identity("a")}


def test_lookup_of_unbound_disk(bindings: DiskBindings) -> None:
    assert bindings.lookup(str(uuid.uuid4())) is None


def test_identity_must_be_a_digest(bindings: DiskBindings) -> None:
    with pytest.raises(ValueError, match="SHA-256"):
        bindings.bind(str(uuid.uuid4()), "not-a-digest")


def test_tampered_binding_is_reported(bindings: DiskBindings, kube_client: Any) -> None:
    disk = str(uuid.uuid4())
    k8s.CoreV1Api(kube_client).create_namespaced_config_map(
        NAMESPACE,
        k8s.V1ConfigMap(
            metadata=k8s.V1ObjectMeta(name=BINDING_PREFIX + disk),
            data={"nodeIdentity": "garbage"},
        ),
    )
    with pytest.raises(UpstreamError, match="malformed"):
        bindings.bind(disk, identity("a"))


def test_unreachable_api_is_upstream_error() -> None:
    configuration = k8s.Configuration()
    configuration.host = "https://127.0.0.1:9"  # discard port: nothing listens
    configuration.retries = False
    core = k8s.CoreV1Api(k8s.ApiClient(configuration))
    with pytest.raises(UpstreamError, match="Kubernetes API"):
        DiskBindings(core, namespace=NAMESPACE).bind(str(uuid.uuid4()), identity("a"))
