"""JoinService chart: a DaemonSet on control-plane nodes in kube-system, NodePort 30090 -> 9090,
join-config mounted so updates reach the pods, cluster CA from kube-system, and RBAC that can
create Secrets and create or get ConfigMaps in kube-system, and nothing else."""

from __future__ import annotations

from typing import Any

import pytest


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]


@pytest.fixture(scope="module")
def manifests(render: Any) -> list[dict[str, Any]]:
    rendered: list[dict[str, Any]] = render("joinservice")
    return rendered


def pod_spec(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    (daemonset,) = by_kind(manifests, "DaemonSet")
    return dict(daemonset["spec"]["template"]["spec"])


def test_daemonset_on_control_plane_nodes(manifests: list[dict[str, Any]]) -> None:
    spec = pod_spec(manifests)
    assert spec["nodeSelector"] == {"node-role.kubernetes.io/control-plane": ""}
    assert by_kind(manifests, "Deployment") == []


def test_tpm_for_self_attestation(manifests: list[dict[str, Any]], render: Any) -> None:
    """The JoinService attests itself to joining nodes (mutual aTLS) with the node's TPM."""
    spec = pod_spec(manifests)
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["tpm"]["hostPath"] == {"path": "/dev/tpmrm0", "type": "CharDevice"}
    assert "--tpm-tcti=device:/dev/tpmrm0" in spec["containers"][0]["args"]
    # Default: root and privileged, as the device needs (see values.yaml).
    assert spec["securityContext"]["runAsNonRoot"] is False
    assert spec["containers"][0]["securityContext"]["privileged"] is True
    unprivileged = pod_spec(
        render(
            "joinservice",
            values={"tpm": {"runAsUser": 65532, "supplementalGroups": [59], "privileged": False}},
        )
    )
    assert unprivileged["securityContext"]["runAsNonRoot"] is True
    assert unprivileged["securityContext"]["fsGroup"] == 65532
    assert unprivileged["securityContext"]["supplementalGroups"] == [59]
    context = unprivileged["containers"][0]["securityContext"]
    assert (context["privileged"], context["allowPrivilegeEscalation"]) == (False, False)


def test_api_server_endpoint_defaults_to_this_node(
    manifests: list[dict[str, Any]], render: Any
) -> None:
    container = pod_spec(manifests)["containers"][0]
    assert "--api-server-endpoint=$(HOST_IP):6443" in container["args"]
    host_ip = next(e for e in container["env"] if e["name"] == "HOST_IP")
    assert host_ip["valueFrom"] == {"fieldRef": {"fieldPath": "status.hostIP"}}
    custom = pod_spec(render("joinservice", values={"apiServerEndpoint": "10.9.9.9:6443"}))
    assert "--api-server-endpoint=10.9.9.9:6443" in custom["containers"][0]["args"]


def test_nodeport_30090_reaches_the_atls_port(manifests: list[dict[str, Any]]) -> None:
    (service,) = by_kind(manifests, "Service")
    assert service["spec"]["type"] == "NodePort"
    (port,) = service["spec"]["ports"]
    assert (port["nodePort"], port["port"], port["targetPort"]) == (30090, 9090, "grpc")
    container = pod_spec(manifests)["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == 9090


def test_probes_use_the_plaintext_health_port_not_the_atls_port(
    manifests: list[dict[str, Any]],
) -> None:
    container = pod_spec(manifests)["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["health"] != ports["grpc"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["grpc"]["port"] == ports["health"]
    assert f"--health-port={ports['health']}" in container["args"]


def test_join_config_salt_and_cluster_ca_are_mounted(manifests: list[dict[str, Any]]) -> None:
    spec = pod_spec(manifests)
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["join-config"]["configMap"]["name"] == "join-config"
    assert {i["key"] for i in volumes["join-config"]["configMap"]["items"]} == {
        "attestationVariant",
        "measurements",
    }
    assert volumes["measurement-salt"]["secret"]["items"] == [
        {"key": "measurementSalt", "path": "measurementSalt"}
    ]
    assert volumes["measurement-salt"]["secret"]["secretName"] == "constellation-measurement-salt"
    pki = volumes["cluster-pki"]["secret"]
    assert pki["secretName"] == "constellation-cluster-pki"
    # kubeadm's layout, which the service hands to control-plane nodes.
    assert {i["path"] for i in pki["items"]} == {
        "ca.crt",
        "ca.key",
        "sa.key",
        "sa.pub",
        "front-proxy-ca.crt",
        "front-proxy-ca.key",
        "etcd/ca.crt",
        "etcd/ca.key",
    }
    assert all("/" not in i["key"] for i in pki["items"])
    assert volumes["components"]["configMap"] == {
        "name": "kubernetes-components",
        "items": [{"key": "components.json", "path": "components.json"}],
    }
    container = spec["containers"][0]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert set(mounts) == set(volumes)
    for name, mount in mounts.items():
        assert mount.get("readOnly") is (None if name == "tpm" else True)
        # A subPath mount never sees ConfigMap updates: the validator could not reload.
        assert "subPath" not in mount
    args = container["args"]
    pki_dir = mounts["cluster-pki"]["mountPath"]
    for flag in (
        f"--join-config-dir={mounts['join-config']['mountPath']}",
        f"--measurement-salt-file={mounts['measurement-salt']['mountPath']}/measurementSalt",
        f"--ca-cert-file={pki_dir}/ca.crt",
        f"--ca-key-file={pki_dir}/ca.key",
        f"--pki-dir={pki_dir}",
        f"--components-file={mounts['components']['mountPath']}/components.json",
        "--namespace=kube-system",
    ):
        assert flag in args


def test_keyservice_endpoint_defaults_to_the_release_namespace(
    manifests: list[dict[str, Any]], render: Any
) -> None:
    args = pod_spec(manifests)["containers"][0]["args"]
    assert "--keyservice-endpoint=keyservice.kube-system.svc:9000" in args
    custom = pod_spec(render("joinservice", values={"keyService": {"endpoint": "ks.x.svc:9000"}}))
    assert "--keyservice-endpoint=ks.x.svc:9000" in custom["containers"][0]["args"]


def test_rbac_creates_secrets_and_creates_or_reads_configmaps_in_kube_system_only(
    manifests: list[dict[str, Any]],
) -> None:
    assert by_kind(manifests, "ClusterRole") == []
    assert by_kind(manifests, "ClusterRoleBinding") == []
    (role,) = by_kind(manifests, "Role")
    assert role["metadata"]["namespace"] == "kube-system"
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "get"]},
    ]
    (binding,) = by_kind(manifests, "RoleBinding")
    assert binding["metadata"]["namespace"] == "kube-system"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    (account,) = by_kind(manifests, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "kube-system"}
    ]
    assert pod_spec(manifests)["serviceAccountName"] == account["metadata"]["name"]


def test_refuses_to_render_outside_kube_system(helm_template: Any) -> None:
    result = helm_template("joinservice", namespace="default")
    assert result.returncode != 0
    assert "must run there; install with --namespace kube-system" in result.stderr
