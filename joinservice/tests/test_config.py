"""Settings are checked once, at start-up, and every problem is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from constellation.joinservice.config import Settings
from constellation.joinservice.errors import ConfigError


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    join_config = tmp_path / "join-config"
    join_config.mkdir()
    paths = {"join_config_dir": join_config}
    for name in ("ca.crt", "ca.key", "components.json", "ks-ca.crt", "ks-tls.crt", "ks-tls.key"):
        (tmp_path / name).write_bytes(b"x")
        paths[name] = tmp_path / name
    return paths


def create(files: dict[str, Path], **override: object) -> Settings:
    arguments: dict[str, object] = {
        "join_config_dir": files["join_config_dir"],
        "keyservice_endpoint": "keyservice.kube-system:9000",
        "ca_cert_file": files["ca.crt"],
        "ca_key_file": files["ca.key"],
        "api_server_endpoint": "10.0.0.2:6443",
        "components_file": files["components.json"],
    }
    arguments.update(override)
    return Settings.create(**arguments)  # type: ignore[arg-type]


def test_defaults(files: dict[str, Path]) -> None:
    settings = create(files)
    assert settings.port == 9090
    assert settings.pki_dir == files["ca.crt"].parent
    assert settings.kubeconfig is None
    assert settings.namespace == "kube-system"


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"listen_host": "localhost"}, "IP address"),
        ({"port": 70000}, "port"),
        ({"health_port": -1}, "health port"),
        ({"poll_interval": 0.0}, "poll interval"),
        ({"poll_interval": 3600.0}, "poll interval"),
        ({"keyservice_endpoint": "keyservice"}, "KeyService endpoint"),
        ({"api_server_endpoint": "10.0.0.2:https"}, "API server endpoint"),
        ({"join_config_dir": Path("/nonexistent/join-config")}, "join-config directory"),
        ({"kubeconfig": Path("/nonexistent/admin.conf")}, "kubeconfig"),
        ({"measurement_salt_file": Path("/nonexistent/salt")}, "measurement salt"),
        ({"pki_dir": Path("/nonexistent/pki")}, "PKI directory"),
        ({"namespace": ""}, "namespace"),
        ({"tpm_tcti": ""}, "TCTI"),
    ],
)
def test_rejects(files: dict[str, Path], override: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        create(files, **override)


def test_keyservice_tls_files(files: dict[str, Path]) -> None:
    settings = create(
        files,
        keyservice_ca_file=files["ks-ca.crt"],
        keyservice_cert_file=files["ks-tls.crt"],
        keyservice_key_file=files["ks-tls.key"],
    )
    assert settings.keyservice_tls_files == (
        files["ks-ca.crt"],
        files["ks-tls.crt"],
        files["ks-tls.key"],
    )
    assert settings.keyservice_server_name == "constellation-keyservice"
    assert create(files).keyservice_tls_files is None  # an embedding with its own channel


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"keyservice_ca_file": Path("/nonexistent/ca.crt")}, "missing --keyservice-cert-file"),
        (
            {
                "keyservice_ca_file": Path("/nonexistent/ca.crt"),
                "keyservice_cert_file": Path("/nonexistent/tls.crt"),
                "keyservice_key_file": Path("/nonexistent/tls.key"),
            },
            "KeyService client \\(--keyservice-ca-file\\) file /nonexistent/ca.crt",
        ),
        ({"keyservice_server_name": ""}, "KeyService server name"),
        ({"keyservice_server_name": "a b"}, "KeyService server name"),
    ],
)
def test_rejects_keyservice_tls(
    files: dict[str, Path], override: dict[str, object], fragment: str
) -> None:
    with pytest.raises(ConfigError, match=fragment):
        create(files, **override)


def test_reports_every_problem(files: dict[str, Path]) -> None:
    with pytest.raises(ConfigError) as info:
        create(files, port=-1, namespace="", ca_key_file=Path("/nonexistent"))
    message = str(info.value)
    assert "port" in message
    assert "namespace" in message
    assert "CA key" in message
