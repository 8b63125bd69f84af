"""Cluster objects through the real API server, and the files the charts would mount."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from constellation.attestation.measurements import Measurement, Measurements
from constellation.attestation.testing.platform import cached_platform_ca
from constellation.cli.mini import clusterobjects
from constellation.cli.mini.errors import ApplyError
from constellation.cli.servicepki import issue_service_pki

REPO = Path(__file__).resolve().parents[3]

IMAGE = Measurements({4: Measurement(b"\x04" * 32), 9: Measurement(b"\x09" * 32)})
ROOTS = cached_platform_ca().cert_pem.decode()


def _values(chart: str) -> dict[str, Any]:
    path = REPO / "charts" / chart / "values.yaml"
    if not path.is_file():
        pytest.skip(f"{path} not found (charts are not part of this checkout)")
    return yaml.safe_load(path.read_text())


def test_mount_paths_are_the_charts_mount_paths() -> None:
    join = _values("joinservice")
    keys = _values("keyservice")
    assert join["joinConfig"]["mountPath"] == "/" + clusterobjects.JOIN_CONFIG_MOUNT
    assert join["joinConfig"]["configMapName"] == clusterobjects.JOIN_CONFIG
    assert (
        (join["joinConfig"]["measurementSaltMountPath"])
        == "/" + clusterobjects.MEASUREMENT_SALT_MOUNT
    )
    assert join["joinConfig"]["measurementSaltSecretName"] == (
        clusterobjects.MEASUREMENT_SALT_SECRET
    )
    assert join["clusterPKI"]["mountPath"] == "/" + clusterobjects.CLUSTER_PKI_MOUNT
    assert join["clusterPKI"]["secretName"] == clusterobjects.CLUSTER_PKI_SECRET
    assert join["components"]["mountPath"] == "/" + clusterobjects.COMPONENTS_MOUNT
    assert join["components"]["configMapName"] == clusterobjects.COMPONENTS_CONFIGMAP
    assert keys["masterSecret"]["mountPath"] == "/" + clusterobjects.MASTER_SECRET_MOUNT
    assert keys["masterSecret"]["secretName"] == clusterobjects.MASTER_SECRET_SECRET
    assert keys["tls"]["mountPath"] == "/" + clusterobjects.KEYSERVICE_TLS_MOUNT
    assert keys["tls"]["secretName"] == clusterobjects.KEYSERVICE_TLS_SECRET
    assert join["keyService"]["clientMountPath"] == "/" + clusterobjects.KEYSERVICE_CLIENT_MOUNT
    assert join["keyService"]["clientSecretName"] == clusterobjects.KEYSERVICE_CLIENT_SECRET


def test_join_config_always_expects_pcr15_zero() -> None:
    data = clusterobjects.join_config_data("qemu-vtpm", IMAGE.with_pcr(15, b"\x15" * 32), ROOTS)
    assert Measurements.from_json(data["measurements"])[15].expected == bytes(32)
    assert data["attestationVariant"] == "qemu-vtpm"
    assert data["platformRoots"] == ROOTS


@pytest.mark.kube
def test_objects_written_through_the_api_are_materialized_at_the_mount_paths(
    control_plane: Any, tmp_path: Path
) -> None:
    core = clusterobjects.core_api(control_plane.admin_kubeconfig)
    components = {"kubernetesVersion": "v1.36.3", "components": []}
    service_pki = issue_service_pki()
    clusterobjects.write_cluster_objects(
        core,
        variant="qemu-vtpm",
        measurements=IMAGE,
        platform_roots=ROOTS,
        measurement_salt=b"\x01" * 32,
        master_key=b"\x02" * 32,
        master_salt=b"\x03" * 32,
        pki_dir=control_plane.pki_dir,
        components=components,
        service_pki=service_pki,
    )
    # Written twice: an existing object is replaced, not an error.
    clusterobjects.write_join_config(core, "qemu-vtpm", IMAGE.with_pcr(11, b"\x11" * 32), ROOTS)
    files = clusterobjects.MountedFiles(tmp_path / "keyservice", tmp_path / "joinservice")
    clusterobjects.materialize(core, files)

    assert files.master_secret_file.read_bytes() == b"\x02" * 32
    assert files.master_salt_file.read_bytes() == b"\x03" * 32
    assert os.stat(files.master_secret_file).st_mode & 0o077 == 0
    assert files.measurement_salt_file.read_bytes() == b"\x01" * 32
    assert (files.join_config_dir / "attestationVariant").read_text() == "qemu-vtpm"
    assert (files.join_config_dir / "platformRoots").read_text() == ROOTS
    mounted = Measurements.from_json((files.join_config_dir / "measurements").read_bytes())
    assert sorted(mounted) == [4, 9, 11, 15]
    assert (files.pki_dir / "etcd" / "ca.crt").read_bytes() == (
        control_plane.pki_dir / "etcd" / "ca.crt"
    ).read_bytes()
    assert os.stat(files.pki_dir / "ca.key").st_mode & 0o077 == 0
    assert json.loads(files.components_file.read_text()) == components
    # The KeyService's mutual TLS: each side gets its bundle; only the private keys are 0600.
    for directory, bundle in (
        (files.keyservice_tls_dir, service_pki.keyservice_server),
        (files.keyservice_client_dir, service_pki.joinservice_client),
    ):
        assert {p.name: p.read_bytes() for p in directory.iterdir()} == bundle.secret_data()
        assert os.stat(directory / "tls.key").st_mode & 0o077 == 0
    assert files.keyservice_tls_dir.is_relative_to(tmp_path / "keyservice")
    assert files.keyservice_client_dir.is_relative_to(tmp_path / "joinservice")
    variant, measurements, roots = clusterobjects.read_join_config(core)
    assert variant == "qemu-vtpm"
    assert roots == ROOTS
    assert measurements == Measurements.from_json(
        (files.join_config_dir / "measurements").read_bytes()
    )


@pytest.mark.parametrize(
    "text",
    [
        "a: [unclosed",  # not YAML: yaml.ParserError escaped before
        "? ?\n",  # YAML with a complex key
        "- just\n- a list\n",  # YAML of the wrong shape
        "clusters: 3\ncurrent-context: x\n",
    ],
)
def test_a_kubeconfig_that_is_not_one_is_a_typed_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "admin.conf"
    path.write_text(text)
    with pytest.raises(ApplyError, match="kubeconfig"):
        clusterobjects.core_api(path)
