"""Properties every chart keeps: lint-clean, renders to manifests that validate offline against
the pinned Kubernetes version, pass yamllint, harden every pod, and refuse invalid values."""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from yamllint import linter  # type: ignore[import-untyped]
from yamllint.config import YamlLintConfig  # type: ignore[import-untyped]

from constellation.cli.mini import clusterobjects
from constellation.cli.servicepki import keyservice_dns_names

REPO = Path(__file__).resolve().parents[2]
CHARTS = ("keyservice", "joinservice", "verificationservice")

# Values that differ from the defaults in every switch the templates branch on.
NON_DEFAULT_VALUES: dict[str, dict[str, Any]] = {
    "keyservice": {
        "image": {"repository": "registry.example/constellation/keyservice", "tag": "v9.9.9"},
        "replicas": 3,
        "metrics": {"enabled": False},
        "networkPolicy": {"enabled": False},
        "extraArgs": ["--verbose"],
        "logLevel": "debug",
        "commonLabels": {"team": "platform"},
        "podAnnotations": {"example.com/owner": "platform"},
    },
    "joinservice": {
        "image": {"tag": "v9.9.9", "pullPolicy": "Never"},
        "healthPort": 9191,
        "service": {"nodePort": 31090},
        "keyService": {"endpoint": "keyservice.example.svc:9000"},
        "apiServerEndpoint": "10.0.0.1:6443",
        "tpm": {"privileged": False, "runAsUser": 65532, "supplementalGroups": [59]},
        "metrics": {"enabled": False},
        "nodeSelector": {},
        "tolerations": [],
    },
    "verificationservice": {
        "attestationVariant": "azure-sev-snp",
        "service": {"externalTrafficPolicy": "Cluster", "grpcNodePort": 31081},
        "tpm": {"privileged": False, "runAsUser": 65532, "supplementalGroups": [59]},
        "eventLog": {"enabled": False},
        "metrics": {"enabled": False},
        "extraArgs": ["--flag=with space"],
    },
}
VALUE_SETS = ("default", "non-default")

# The rendered output is machine-written YAML: check structure (duplicate keys, syntax,
# indentation consistency), not human layout.
YAMLLINT = YamlLintConfig(
    "extends: default\n"
    "rules:\n"
    "  line-length: disable\n"
    "  document-start: disable\n"
    "  comments: disable\n"
    "  comments-indentation: disable\n"
    "  indentation: {spaces: consistent, indent-sequences: whatever}\n"
)

WORKLOAD_KINDS = ("Deployment", "DaemonSet", "StatefulSet")


def values_for(chart: str, value_set: str) -> dict[str, Any] | None:
    return copy.deepcopy(NON_DEFAULT_VALUES[chart]) if value_set == "non-default" else None


def effective_values(chart: str, value_set: str) -> dict[str, Any]:
    """The chart's defaults merged with the value set, as helm merges them (maps deep)."""
    merged: dict[str, Any] = yaml.safe_load((REPO / "charts" / chart / "values.yaml").read_text())

    def merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
        for key, value in extra.items():
            if isinstance(value, dict) and value and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    merge(merged, values_for(chart, value_set) or {})
    return merged


def workloads(manifests: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (m for m in manifests if m["kind"] in WORKLOAD_KINDS)


@pytest.fixture(params=CHARTS)
def chart(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=VALUE_SETS)
def value_set(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_helm_lint_strict(helm: Path, chart: str, value_set: str, tmp_path: Path) -> None:
    args = [
        str(helm),
        "lint",
        "--strict",
        str(REPO / "charts" / chart),
        "--namespace",
        "kube-system",
    ]
    values = values_for(chart, value_set)
    if values is not None:
        (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
        args += ["--values", str(tmp_path / "values.yaml")]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_rendered_manifests_validate_against_the_pinned_kubernetes(
    render: Any, kube_version: str, chart: str, value_set: str
) -> None:
    manifests = render(chart, values=values_for(chart, value_set))
    assert manifests
    for manifest in manifests:
        kubernetes_validate.validate(manifest, kube_version, strict=True)


def test_offline_validation_rejects_a_broken_manifest(render: Any, kube_version: str) -> None:
    """The validation above can fail: a wrong type and an unknown field are both caught."""
    (deployment,) = (m for m in render("keyservice") if m["kind"] == "Deployment")
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "grpc"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, kube_version, strict=True)
    unknown_field = copy.deepcopy(deployment)
    unknown_field["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(unknown_field, kube_version, strict=True)


def test_rendered_output_and_values_pass_yamllint(
    helm_template: Any, chart: str, value_set: str
) -> None:
    result = helm_template(chart, values=values_for(chart, value_set))
    assert result.returncode == 0, result.stderr
    problems = list(linter.run(result.stdout, YAMLLINT))
    assert problems == [], "\n".join(map(str, problems))
    for plain_yaml in ("Chart.yaml", "values.yaml"):
        text = (REPO / "charts" / chart / plain_yaml).read_text()
        problems = list(
            linter.run(
                text,
                YamlLintConfig(
                    "extends: default\nrules: {document-start: disable, line-length: {max: 100}}"
                ),
            )
        )
        assert problems == [], f"{plain_yaml}: " + "\n".join(map(str, problems))


def test_yamllint_rejects_duplicate_keys() -> None:
    """The yamllint gate can fail on what a template bug typically produces."""
    problems = list(linter.run("a: 1\na: 2\n", YAMLLINT))
    assert [p.rule for p in problems] == ["key-duplicates"]


def test_every_pod_is_hardened(render: Any, chart: str, value_set: str) -> None:
    values = effective_values(chart, value_set)
    manifests = render(chart, values=values_for(chart, value_set))
    (workload,) = workloads(manifests)
    pod = workload["spec"]["template"]
    spec = pod["spec"]
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["enableServiceLinks"] is False
    for container in spec["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        if not context.get("privileged", False):
            assert context["allowPrivilegeEscalation"] is False
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) >= {"cpu", "memory"}
        for probe in ("livenessProbe", "readinessProbe"):
            assert set(container[probe]["grpc"]) == {"port"}
        tag = values["image"]["tag"] or "0.1.0"
        assert container["image"] == f"{values['image']['repository']}:{tag}"
        assert container["image"].startswith("localhost/constellation/") == (
            "repository" not in (values_for(chart, value_set) or {}).get("image", {})
        )


def test_prometheus_annotations_follow_metrics_port(
    render: Any, chart: str, value_set: str
) -> None:
    values = effective_values(chart, value_set)
    (workload,) = workloads(render(chart, values=values_for(chart, value_set)))
    pod = workload["spec"]["template"]
    annotations = pod["metadata"].get("annotations") or {}
    ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    if values["metrics"]["enabled"]:
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(ports["metrics"])
        assert annotations["prometheus.io/path"] == "/metrics"
        assert ports["metrics"] == values["metrics"]["port"]
    else:
        assert "prometheus.io/scrape" not in annotations
        assert "metrics" not in ports


def test_labels_and_names_are_stable(render: Any, chart: str, value_set: str) -> None:
    for manifest in render(chart, values=values_for(chart, value_set)):
        labels = manifest["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == chart
        assert labels["app.kubernetes.io/part-of"] == "constellation"
        if value_set == "non-default" and chart == "keyservice":
            assert labels["team"] == "platform"


@pytest.mark.parametrize(
    ("chart_name", "values", "complaint"),
    [
        ("keyservice", {"port": 70000}, "port"),
        ("keyservice", {"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ("keyservice", {"replicas": 0}, "replicas"),
        ("keyservice", {"masterSecret": {"mountPath": "relative/path"}}, "mountPath"),
        ("keyservice", {"unknownKey": True}, "unknownKey"),
        ("keyservice", {"resources": {"requests": {"memory": 64}}}, "memory"),
        ("joinservice", {"service": {"nodePort": 9090}}, "nodePort"),
        ("joinservice", {"keyService": {"endpoint": "no port here"}}, "endpoint"),
        ("joinservice", {"clusterPKI": {"secretName": "Not_A_DNS_Name"}}, "secretName"),
        ("joinservice", {"apiServerEndpoint": "https://10.0.0.1"}, "apiServerEndpoint"),
        ("joinservice", {"tpm": {"supplementalGroups": ["tss"]}}, "supplementalGroups"),
        ("verificationservice", {"attestationVariant": "sgx"}, "attestationVariant"),
        ("verificationservice", {"tpm": {"devicePath": "/tmp/tpm"}}, "devicePath"),
        (
            "verificationservice",
            {"service": {"externalTrafficPolicy": "Nearby"}},
            "externalTraffic",
        ),
        ("verificationservice", {"tpm": {"runAsUser": -1}}, "runAsUser"),
        ("verificationservice", {"eventLog": {"path": "relative"}}, "path"),
    ],
)
def test_schema_rejects_invalid_values(
    helm_template: Any, chart_name: str, values: dict[str, Any], complaint: str
) -> None:
    result = helm_template(chart_name, values=values)
    assert result.returncode != 0
    assert complaint in result.stderr


def _workload(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    (workload,) = workloads(manifests)
    return dict(workload)


def _volume_and_mount(pod_spec: dict[str, Any], name: str) -> tuple[dict[str, Any], str]:
    (volume,) = (v for v in pod_spec["volumes"] if v["name"] == name)
    (mount,) = (m for m in pod_spec["containers"][0]["volumeMounts"] if m["name"] == name)
    assert mount["readOnly"] is True
    assert "subPath" not in mount
    return volume, str(mount["mountPath"])


def test_keyservice_mutual_tls_is_wired_end_to_end(render: Any, value_set: str) -> None:
    """Both charts mount the Secrets `constellation apply` writes, where their flags point; the
    name the JoinService checks is one the CLI puts into the KeyService's certificate; and the
    only plaintext port of the KeyService is the health port the probes use."""
    tls_items = [{"key": k, "path": k} for k in ("ca.crt", "tls.crt", "tls.key")]
    keys = _workload(render("keyservice", values=values_for("keyservice", value_set)))
    keys_pod = keys["spec"]["template"]["spec"]
    volume, mount = _volume_and_mount(keys_pod, "tls")
    assert volume["secret"]["secretName"] == clusterobjects.KEYSERVICE_TLS_SECRET
    assert volume["secret"]["items"] == tls_items
    assert volume["secret"]["defaultMode"] == 0o440
    assert mount == "/" + clusterobjects.KEYSERVICE_TLS_MOUNT
    container = keys_pod["containers"][0]
    for flag in (
        f"--tls-cert-file={mount}/tls.crt",
        f"--tls-key-file={mount}/tls.key",
        f"--client-ca-file={mount}/ca.crt",
    ):
        assert flag in container["args"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["health"] != ports["grpc"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["grpc"]["port"] == ports["health"]

    join = _workload(render("joinservice", values=values_for("joinservice", value_set)))
    join_pod = join["spec"]["template"]["spec"]
    volume, mount = _volume_and_mount(join_pod, "keyservice-client")
    assert volume["secret"]["secretName"] == clusterobjects.KEYSERVICE_CLIENT_SECRET
    assert volume["secret"]["items"] == tls_items
    assert volume["secret"]["defaultMode"] == 0o440
    assert mount == "/" + clusterobjects.KEYSERVICE_CLIENT_MOUNT
    args = join_pod["containers"][0]["args"]
    for flag in (
        f"--keyservice-ca-file={mount}/ca.crt",
        f"--keyservice-cert-file={mount}/tls.crt",
        f"--keyservice-key-file={mount}/tls.key",
    ):
        assert flag in args
    (server_name,) = (a.split("=", 1)[1] for a in args if a.startswith("--keyservice-server-name="))
    assert server_name in keyservice_dns_names()
    # The default endpoint's host is in the certificate too (a client that checks it works).
    (endpoint,) = (a.split("=", 1)[1] for a in args if a.startswith("--keyservice-endpoint="))
    if value_set == "default":
        assert endpoint.rsplit(":", 1)[0] in keyservice_dns_names()


def test_keyservice_grpc_port_admits_joinservice_pods_only(render: Any) -> None:
    """Every ingress rule that covers the gRPC port names the JoinService's pods, and no rule
    without a source (the health rule) covers it."""
    policy = next(m for m in render("keyservice") if m["kind"] == "NetworkPolicy")
    join_labels = _workload(render("joinservice"))["spec"]["template"]["metadata"]["labels"]
    grpc_rules = [
        r for r in policy["spec"]["ingress"] if any(p["port"] == "grpc" for p in r["ports"])
    ]
    assert grpc_rules
    for rule in grpc_rules:
        assert [p["port"] for p in rule["ports"]] == ["grpc"]
        (peer,) = rule["from"]
        assert set(peer) == {"podSelector"}
        selector = peer["podSelector"]["matchLabels"]
        assert selector
        assert all(join_labels.get(k) == v for k, v in selector.items())
    open_rules = [r for r in policy["spec"]["ingress"] if "from" not in r]
    assert [p["port"] for r in open_rules for p in r["ports"]] == ["health"]


def test_keyservice_refuses_to_render_without_its_tls_secret_name(helm_template: Any) -> None:
    """The schema demands the TLS values: a chart without mutual TLS cannot be installed."""
    result = helm_template("keyservice", values={"tls": {"secretName": ""}})
    assert result.returncode != 0
    assert "secretName" in result.stderr
