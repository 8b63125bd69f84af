"""KeyService chart: control-plane only, ClusterIP 9000 (mutual TLS), master secret and TLS files
as read-only files, probes on the plaintext health port, and a NetworkPolicy that admits
GetDataKey callers from the JoinService's pods only."""

from __future__ import annotations

from typing import Any

import pytest


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """matchLabels semantics: every selector label present with the same value."""
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.fixture(scope="module")
def manifests(render: Any) -> list[dict[str, Any]]:
    rendered: list[dict[str, Any]] = render("keyservice")
    return rendered


def test_deployment_runs_on_control_plane_nodes(manifests: list[dict[str, Any]]) -> None:
    (deployment,) = by_kind(manifests, "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"node-role.kubernetes.io/control-plane": ""}
    assert {
        "key": "node-role.kubernetes.io/control-plane",
        "operator": "Exists",
        "effect": "NoSchedule",
    } in spec["tolerations"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 65532


def test_service_is_cluster_internal_on_9000(manifests: list[dict[str, Any]]) -> None:
    (service,) = by_kind(manifests, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "grpc", "port": 9000, "targetPort": "grpc", "protocol": "TCP"}
    ]
    (deployment,) = by_kind(manifests, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "grpc", "containerPort": 9000, "protocol": "TCP"} in container["ports"]
    # The gRPC port demands a client certificate: kubelet probes use the health port.
    assert {"name": "health", "containerPort": 9091, "protocol": "TCP"} in container["ports"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["grpc"]["port"] == 9091
    assert "--health-port=9091" in container["args"]


def test_master_secret_is_mounted_read_only_as_two_files(manifests: list[dict[str, Any]]) -> None:
    (deployment,) = by_kind(manifests, "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    (volume,) = (v for v in spec["volumes"] if v["name"] == "mastersecret")
    assert volume["secret"]["secretName"] == "constellation-mastersecret"
    assert volume["secret"]["items"] == [
        {"key": "mastersecret", "path": "mastersecret"},
        {"key": "salt", "path": "salt"},
    ]
    assert volume["secret"]["defaultMode"] == 0o440
    container = spec["containers"][0]
    (mount,) = (m for m in container["volumeMounts"] if m["name"] == "mastersecret")
    assert mount["readOnly"] is True
    assert "subPath" not in mount
    assert f"--master-secret-file={mount['mountPath']}/mastersecret" in container["args"]
    assert f"--salt-file={mount['mountPath']}/salt" in container["args"]


def test_network_policy_admits_only_joinservice_pods(
    manifests: list[dict[str, Any]], render: Any
) -> None:
    (policy,) = by_kind(manifests, "NetworkPolicy")
    (deployment,) = by_kind(manifests, "Deployment")
    own_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(policy["spec"]["podSelector"]["matchLabels"], own_labels)
    assert policy["spec"]["policyTypes"] == ["Ingress"]

    grpc_rules = [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == "grpc"]
    (rule,) = grpc_rules
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}, "no namespaceSelector or ipBlock may widen the callers"
    allowed = peer["podSelector"]["matchLabels"]
    assert allowed

    def pod_labels(chart: str) -> dict[str, str]:
        (workload,) = (m for m in render(chart) if m["kind"] in ("Deployment", "DaemonSet"))
        return dict(workload["spec"]["template"]["metadata"]["labels"])

    assert selects(allowed, pod_labels("joinservice"))
    # Negative: neither the verification service's pods nor the KeyService's own pods qualify.
    assert not selects(allowed, pod_labels("verificationservice"))
    assert not selects(allowed, own_labels)

    # The other rules open the health and metrics ports only, never the gRPC port.
    other_rules = [r for r in policy["spec"]["ingress"] if r is not rule]
    assert [p["port"] for r in other_rules for p in r["ports"]] == ["health", "metrics"]


def test_network_policy_can_be_disabled_and_metrics_rule_follows_metrics(render: Any) -> None:
    assert (
        by_kind(render("keyservice", values={"networkPolicy": {"enabled": False}}), "NetworkPolicy")
        == []
    )
    (policy,) = by_kind(
        render("keyservice", values={"metrics": {"enabled": False}}), "NetworkPolicy"
    )
    assert [r["ports"][0]["port"] for r in policy["spec"]["ingress"]] == ["grpc", "health"]


def test_replicas_and_extra_args(render: Any) -> None:
    (deployment,) = by_kind(
        render("keyservice", values={"replicas": 2, "extraArgs": ["--a=b c"]}), "Deployment"
    )
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["spec"]["containers"][0]["args"][-1] == "--a=b c"
