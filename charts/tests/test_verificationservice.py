"""VerificationService chart: a DaemonSet on every node with the TPM device, NodePorts
30081 (gRPC -> 9090) and 30080 (HTTP -> 8080) answered by the addressed node's own pod."""

from __future__ import annotations

from typing import Any

import pytest


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]


def pod_spec(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    (daemonset,) = by_kind(manifests, "DaemonSet")
    return dict(daemonset["spec"]["template"]["spec"])


@pytest.fixture(scope="module")
def manifests(render: Any) -> list[dict[str, Any]]:
    rendered: list[dict[str, Any]] = render("verificationservice")
    return rendered


def test_runs_on_every_node(manifests: list[dict[str, Any]]) -> None:
    spec = pod_spec(manifests)
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert "nodeSelector" not in spec
    assert spec["automountServiceAccountToken"] is False


def test_nodeports_and_local_traffic_policy(manifests: list[dict[str, Any]]) -> None:
    (service,) = by_kind(manifests, "Service")
    assert service["spec"]["type"] == "NodePort"
    # Local: node X's NodePort is answered by node X's pod, so evidence is about node X.
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    ports = {
        p["name"]: (p["nodePort"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]
    }
    assert ports == {"grpc": (30081, 9090, "grpc"), "http": (30080, 8080, "http")}
    container = pod_spec(manifests)["containers"][0]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (named["grpc"], named["http"]) == (9090, 8080)


def test_tpm_device_from_the_host(manifests: list[dict[str, Any]]) -> None:
    spec = pod_spec(manifests)
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["tpm"]["hostPath"] == {"path": "/dev/tpmrm0", "type": "CharDevice"}
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["tpm"]["mountPath"] == "/dev/tpmrm0"
    args = spec["containers"][0]["args"]
    assert "--tpm=device:/dev/tpmrm0" in args
    assert "--variant=qemu-vtpm" in args


def test_event_log_file_is_mounted_read_only(manifests: list[dict[str, Any]], render: Any) -> None:
    log = "/sys/kernel/security/tpm0/binary_bios_measurements"
    spec = pod_spec(manifests)
    volumes = {v["name"]: v for v in spec["volumes"]}
    # Only the one file, never the whole of securityfs.
    assert volumes["event-log"]["hostPath"] == {"path": log, "type": "File"}
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["event-log"] == {"name": "event-log", "mountPath": log, "readOnly": True}
    assert f"--event-log={log}" in spec["containers"][0]["args"]
    without = pod_spec(render("verificationservice", values={"eventLog": {"enabled": False}}))
    assert [v["name"] for v in without["volumes"]] == ["tpm"]
    assert not any(a.startswith("--event-log") for a in without["containers"][0]["args"])


def test_the_ak_certificate_file_is_mounted_read_only_when_enabled(
    manifests: list[dict[str, Any]], render: Any
) -> None:
    """qemu-vtpm verifiers refuse evidence without the platform's AK certificate."""
    assert not any(
        a.startswith("--ak-certificate-file") for a in pod_spec(manifests)["containers"][0]["args"]
    )
    path = "/var/lib/constellation/ak-cert.der"
    spec = pod_spec(render("verificationservice", values={"akCertificate": {"enabled": True}}))
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["ak-certificate"]["hostPath"] == {"path": path, "type": "File"}
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["ak-certificate"] == {
        "name": "ak-certificate",
        "mountPath": path,
        "readOnly": True,
    }
    assert f"--ak-certificate-file={path}" in spec["containers"][0]["args"]


def test_default_is_root_and_privileged_for_the_device(manifests: list[dict[str, Any]]) -> None:
    spec = pod_spec(manifests)
    context = spec["containers"][0]["securityContext"]
    assert spec["securityContext"]["runAsNonRoot"] is False
    assert context["privileged"] is True
    # The API server rejects privileged together with allowPrivilegeEscalation=false.
    assert context["allowPrivilegeEscalation"] is True


def test_non_root_with_the_tss_group(render: Any) -> None:
    spec = pod_spec(
        render(
            "verificationservice",
            values={"tpm": {"runAsUser": 65532, "supplementalGroups": [59], "privileged": False}},
        )
    )
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 65532
    assert spec["securityContext"]["supplementalGroups"] == [59]
    context = spec["containers"][0]["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["privileged"] is False
    assert context["allowPrivilegeEscalation"] is False
