"""The objects ``apply`` writes into the cluster, and the files the Helm charts mount from them.

Written through the Kubernetes API (namespace ``kube-system``), with the names and keys the
charts in ``charts/`` expect:

| object | keys | mounted by |
|---|---|---|
| ConfigMap ``join-config`` | attestationVariant, measurements, platformRoots | JoinService |
| Secret ``constellation-measurement-salt`` | ``measurementSalt`` | JoinService |
| Secret ``constellation-cluster-pki`` | ``ca.*``, ``sa.*``, ``*-ca.*`` (kubeadm) | JoinService |
| ConfigMap ``kubernetes-components`` | ``components.json`` | JoinService |
| Secret ``constellation-mastersecret`` | ``mastersecret``, ``salt`` | KeyService |
| Secret ``constellation-keyservice-tls`` | ``ca.crt``, ``tls.crt``, ``tls.key`` | KeyService |
| Secret ``constellation-keyservice-client`` | ``ca.crt``, ``tls.crt``, ``tls.key`` | JoinService |

The two TLS Secrets are the KeyService's mutual TLS (:mod:`constellation.cli.servicepki`): the
KeyService's server certificate and the JoinService's client certificate, both from a CA that
``apply`` creates beside the master secret and whose key it never stores, so only the
JoinService can ever call the KeyService.

Mini mode has no kubelet to mount them, so :func:`materialize` plays its part: it reads the
objects **back from the API** and writes their keys as files under a per-service root, at the
chart's mount paths (``<root>/var/run/constellation/join-config/measurements``, ...), with the
chart's item mapping (``etcd-ca.crt`` → ``etcd/ca.crt``). The services are then started on
those files exactly as the charts start them. Rewriting the files after ``upgrade apply``
changed the ConfigMap is what the kubelet's volume refresh does in a cluster.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from constellation.attestation.measurements import Measurements
from constellation.bootstrapper.atomicfile import PUBLIC_MODE, SECRET_MODE, write_atomic
from constellation.cli.mini.errors import ApplyError
from constellation.cli.servicepki import CA_FILE, CERT_FILE, KEY_FILE, ServicePKI

NAMESPACE = "kube-system"
JOIN_CONFIG = "join-config"
MEASUREMENT_SALT_SECRET = "constellation-measurement-salt"  # noqa: S105 (an object name)
CLUSTER_PKI_SECRET = "constellation-cluster-pki"  # noqa: S105 (an object name)
COMPONENTS_CONFIGMAP = "kubernetes-components"
MASTER_SECRET_SECRET = "constellation-mastersecret"  # noqa: S105 (an object name)
KEYSERVICE_TLS_SECRET = "constellation-keyservice-tls"  # noqa: S105 (an object name)
KEYSERVICE_CLIENT_SECRET = "constellation-keyservice-client"  # noqa: S105 (an object name)
API_TIMEOUT_S = 15

# Mount paths and item mappings of the charts (charts/*/values.yaml and templates).
JOIN_CONFIG_MOUNT = "var/run/constellation/join-config"
MEASUREMENT_SALT_MOUNT = "var/run/secrets/constellation/measurement-salt"
CLUSTER_PKI_MOUNT = "var/run/secrets/constellation/pki"
COMPONENTS_MOUNT = "var/run/constellation/components"
MASTER_SECRET_MOUNT = "var/run/secrets/constellation/mastersecret"  # noqa: S105 (a path)
KEYSERVICE_TLS_MOUNT = "var/run/secrets/constellation/keyservice-tls"
KEYSERVICE_CLIENT_MOUNT = "var/run/secrets/constellation/keyservice-client"
#: Keys of both TLS Secrets; only ``tls.key`` is secret.
TLS_ITEMS = (CA_FILE, CERT_FILE, KEY_FILE)
PKI_ITEMS = {
    "ca.crt": "ca.crt",
    "ca.key": "ca.key",
    "sa.key": "sa.key",
    "sa.pub": "sa.pub",
    "front-proxy-ca.crt": "front-proxy-ca.crt",
    "front-proxy-ca.key": "front-proxy-ca.key",
    "etcd-ca.crt": "etcd/ca.crt",
    "etcd-ca.key": "etcd/ca.key",
}
SECRET_FILES = {"ca.key", "sa.key", "front-proxy-ca.key", "etcd-ca.key"}


def core_api(kubeconfig: Path) -> Any:
    """A CoreV1 client authenticated with the admin kubeconfig."""
    import yaml
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    try:
        api_client = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig)
        )
    except (k8s_config.ConfigException, OSError, ValueError, yaml.YAMLError) as err:
        raise ApplyError(f"cannot use the kubeconfig {kubeconfig}: {err}") from None
    except (TypeError, KeyError, AttributeError):  # valid YAML of the wrong shape
        raise ApplyError(f"the kubeconfig {kubeconfig} is not a kubeconfig") from None
    return k8s.CoreV1Api(api_client)


def api_error(action: str, err: Exception) -> ApplyError:
    status = getattr(err, "status", None)
    reason = getattr(err, "reason", None) or type(err).__name__
    return ApplyError(
        f"the Kubernetes API refused to {action}: {status or ''} {reason}".strip(),
        hint="check that the control plane is running (`constellation status`)",
    )


def upsert(api: Any, kind: str, body: Any) -> None:
    """Create ``body`` in kube-system, or replace the object of that name.

    ``api`` is a client API object (CoreV1Api, RbacAuthorizationV1Api) with
    ``create_namespaced_<kind>`` and ``replace_namespaced_<kind>``; ``body`` a model or a dict.
    """
    from kubernetes.client.exceptions import ApiException

    name = body["metadata"]["name"] if isinstance(body, dict) else body.metadata.name
    create = getattr(api, f"create_namespaced_{kind}")
    replace = getattr(api, f"replace_namespaced_{kind}")
    try:
        create(NAMESPACE, body, _request_timeout=API_TIMEOUT_S)
    except ApiException as err:
        if err.status != 409:
            raise api_error(f"create {kind} {name}", err) from None
        try:
            replace(name, NAMESPACE, body, _request_timeout=API_TIMEOUT_S)
        except ApiException as again:
            raise api_error(f"update {kind} {name}", again) from None
    except Exception as err:  # urllib3 connection errors and the like
        raise api_error(f"write {kind} {name}", err) from None


def _secret(name: str, data: Mapping[str, bytes]) -> Any:
    from kubernetes import client as k8s

    return k8s.V1Secret(
        metadata=k8s.V1ObjectMeta(name=name, namespace=NAMESPACE),
        type="Opaque",
        data={key: base64.b64encode(value).decode() for key, value in data.items()},
    )


def _configmap(name: str, data: Mapping[str, str]) -> Any:
    from kubernetes import client as k8s

    return k8s.V1ConfigMap(
        metadata=k8s.V1ObjectMeta(name=name, namespace=NAMESPACE), data=dict(data)
    )


JOIN_CONFIG_KEYS = ("attestationVariant", "measurements", "platformRoots")


def join_config_data(
    variant: str, measurements: Measurements, platform_roots: str | None
) -> dict[str, str]:
    """The ``join-config`` ConfigMap data: PCR 15 expected zero (the node is not locked yet),
    and the platform roots that certify nodes' attestation keys (PEM; empty if none)."""
    return {
        "attestationVariant": variant,
        "measurements": measurements.with_pcr15(None).to_json(),
        "platformRoots": platform_roots or "",
    }


def write_join_config(
    core: Any, variant: str, measurements: Measurements, platform_roots: str | None
) -> None:
    data = join_config_data(variant, measurements, platform_roots)
    upsert(core, "config_map", _configmap(JOIN_CONFIG, data))


def write_cluster_objects(
    core: Any,
    *,
    variant: str,
    measurements: Measurements,
    platform_roots: str | None,
    measurement_salt: bytes,
    master_key: bytes,
    master_salt: bytes,
    pki_dir: Path,
    components: Mapping[str, Any],
    service_pki: ServicePKI,
) -> None:
    """Write every object the three services mount (create, or replace when it exists).

    ``service_pki`` is the KeyService's mutual TLS, written beside the master secret it guards.
    """
    write_join_config(core, variant, measurements, platform_roots)
    upsert(core, "secret", _secret(MEASUREMENT_SALT_SECRET, {"measurementSalt": measurement_salt}))
    upsert(
        core,
        "secret",
        _secret(MASTER_SECRET_SECRET, {"mastersecret": master_key, "salt": master_salt}),
    )
    upsert(
        core,
        "secret",
        _secret(KEYSERVICE_TLS_SECRET, service_pki.keyservice_server.secret_data()),
    )
    upsert(
        core,
        "secret",
        _secret(KEYSERVICE_CLIENT_SECRET, service_pki.joinservice_client.secret_data()),
    )
    pki: dict[str, bytes] = {}
    for key, relative in PKI_ITEMS.items():
        try:
            pki[key] = (pki_dir / relative).read_bytes()
        except OSError as err:
            raise ApplyError(
                f"the control-plane PKI file {pki_dir / relative} is unreadable: {err.strerror}"
            ) from None
    upsert(core, "secret", _secret(CLUSTER_PKI_SECRET, pki))
    upsert(
        core,
        "config_map",
        _configmap(COMPONENTS_CONFIGMAP, {"components.json": json.dumps(components, indent=2)}),
    )


@dataclass(frozen=True)
class MountedFiles:
    """Where the materialized files of each service live."""

    keyservice_root: Path
    joinservice_root: Path

    @property
    def master_secret_file(self) -> Path:
        return self.keyservice_root / MASTER_SECRET_MOUNT / "mastersecret"

    @property
    def master_salt_file(self) -> Path:
        return self.keyservice_root / MASTER_SECRET_MOUNT / "salt"

    @property
    def keyservice_tls_dir(self) -> Path:
        """The KeyService's TLS Secret: its certificate and key, and the client CA."""
        return self.keyservice_root / KEYSERVICE_TLS_MOUNT

    @property
    def keyservice_client_dir(self) -> Path:
        """The JoinService's client Secret for the KeyService: certificate, key and CA."""
        return self.joinservice_root / KEYSERVICE_CLIENT_MOUNT

    @property
    def join_config_dir(self) -> Path:
        return self.joinservice_root / JOIN_CONFIG_MOUNT

    @property
    def measurement_salt_file(self) -> Path:
        return self.joinservice_root / MEASUREMENT_SALT_MOUNT / "measurementSalt"

    @property
    def pki_dir(self) -> Path:
        return self.joinservice_root / CLUSTER_PKI_MOUNT

    @property
    def components_file(self) -> Path:
        return self.joinservice_root / COMPONENTS_MOUNT / "components.json"


def _read(core: Any, kind: str, name: str) -> Any:
    try:
        return getattr(core, f"read_namespaced_{kind}")(
            name, NAMESPACE, _request_timeout=API_TIMEOUT_S
        )
    except Exception as err:
        raise api_error(f"read {kind} {name}", err) from None


def _secret_value(secret: Any, key: str) -> bytes:
    value = (secret.data or {}).get(key)
    if value is None:
        raise ApplyError(f"Secret {secret.metadata.name} has no key {key!r}")
    return base64.b64decode(value)


def _configmap_value(configmap: Any, key: str) -> bytes:
    value = (configmap.data or {}).get(key)
    if value is None:
        raise ApplyError(f"ConfigMap {configmap.metadata.name} has no key {key!r}")
    return str(value).encode()


def _write(path: Path, data: bytes, *, secret: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, data, mode=SECRET_MODE if secret else PUBLIC_MODE)


def materialize_join_config(core: Any, files: MountedFiles) -> None:
    """Refresh the JoinService's ``join-config`` files from the API (the kubelet's job)."""
    configmap = _read(core, "config_map", JOIN_CONFIG)
    for key in JOIN_CONFIG_KEYS:
        _write(files.join_config_dir / key, _configmap_value(configmap, key), secret=False)


def materialize(core: Any, files: MountedFiles) -> None:
    """Read every mounted object back from the API and write it at the chart's mount paths."""
    master = _read(core, "secret", MASTER_SECRET_SECRET)
    for key, path in (("mastersecret", files.master_secret_file), ("salt", files.master_salt_file)):
        _write(path, _secret_value(master, key), secret=True)
    for name, directory in (
        (KEYSERVICE_TLS_SECRET, files.keyservice_tls_dir),
        (KEYSERVICE_CLIENT_SECRET, files.keyservice_client_dir),
    ):
        tls = _read(core, "secret", name)
        for key in TLS_ITEMS:
            _write(directory / key, _secret_value(tls, key), secret=key == KEY_FILE)
    materialize_join_config(core, files)
    salt = _read(core, "secret", MEASUREMENT_SALT_SECRET)
    _write(files.measurement_salt_file, _secret_value(salt, "measurementSalt"), secret=True)
    pki = _read(core, "secret", CLUSTER_PKI_SECRET)
    for key, relative in PKI_ITEMS.items():
        _write(files.pki_dir / relative, _secret_value(pki, key), secret=key in SECRET_FILES)
    components = _read(core, "config_map", COMPONENTS_CONFIGMAP)
    _write(files.components_file, _configmap_value(components, "components.json"), secret=False)


def read_join_config(core: Any) -> tuple[str, Measurements, str]:
    """The join-config in force: variant, measurements, platform roots (PEM, "" if none)."""
    configmap = _read(core, "config_map", JOIN_CONFIG)
    variant = _configmap_value(configmap, "attestationVariant").decode()
    measurements = Measurements.from_json(_configmap_value(configmap, "measurements"))
    roots = str((configmap.data or {}).get("platformRoots") or "")
    return variant, measurements, roots


def registered_nodes(core: Any) -> dict[str, Any]:
    """Node objects by name."""
    try:
        nodes = core.list_node(_request_timeout=API_TIMEOUT_S)
    except Exception as err:
        raise api_error("list nodes", err) from None
    return {node.metadata.name: node for node in nodes.items}
