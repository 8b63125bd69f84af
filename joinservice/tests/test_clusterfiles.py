"""The components file parser and the control-plane file set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from constellation.joinservice.clusterfiles import ClusterFiles, parse_components
from constellation.joinservice.errors import ConfigError

HASH = "sha256:" + "ab" * 32


def components_doc(**override: object) -> bytes:
    item: dict[str, object] = {
        "name": "kubelet",
        "url": "file:///opt/kubelet",
        "hash": HASH,
        "installPath": "/usr/bin/kubelet",
        "extract": False,
    }
    item.update(override)
    return json.dumps({"kubernetesVersion": "v1.31.1", "components": [item]}).encode()


def test_parse_components() -> None:
    parsed = parse_components(components_doc())
    assert parsed.kubernetes_version == "v1.31.1"
    assert parsed.components[0].hash == HASH
    assert parsed.components[0].install_path == "/usr/bin/kubelet"


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"hash": "sha256:" + "AB" * 32}, "hash"),
        ({"hash": "md5:" + "ab" * 16}, "hash"),
        ({"url": ""}, "url"),
        ({"extract": "yes"}, "extract"),
        ({"name": 3}, "name"),
    ],
)
def test_parse_components_rejects(override: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_components(components_doc(**override))


@pytest.mark.parametrize(
    "data",
    [b"[]", b"{", json.dumps({"kubernetesVersion": "1.31", "components": []}).encode()],
)
def test_parse_components_rejects_document(data: bytes) -> None:
    with pytest.raises(ConfigError):
        parse_components(data)


def test_control_plane_files(tmp_path: Path) -> None:
    (tmp_path / "etcd").mkdir()
    for name in ("ca.crt", "ca.key", "sa.key", "etcd/ca.key"):
        (tmp_path / name).write_bytes(name.encode())
    files = ClusterFiles(tmp_path / "ca.crt", tmp_path, tmp_path / "components.json")
    got = files.control_plane_files()
    assert [name for name, _ in got] == ["ca.crt", "ca.key", "sa.key", "etcd/ca.key"]
    assert got[1][1].reveal() == b"ca.key"
    assert "ca.key" not in repr(got[1][1])


def test_control_plane_files_require_ca_key(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_bytes(b"x")
    files = ClusterFiles(tmp_path / "ca.crt", tmp_path, tmp_path / "components.json")
    with pytest.raises(ConfigError, match=r"ca\.key"):
        files.control_plane_files()
    with pytest.raises(ConfigError, match=r"components\.json"):
        files.components()


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 100_000,  # was RecursionError from json.loads
        b'{"components": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",  # was RecursionError
        b"\xff\xfe{}",
    ],
    ids=["deep-array", "deep-components", "not-utf8"],
)
def test_parse_components_refuses_hostile_json(data: bytes) -> None:
    with pytest.raises(ConfigError, match="components file"):
        parse_components(data)


def test_parse_components_does_not_echo_a_huge_value() -> None:
    version = "v" + "9" * 100_000
    data = json.dumps({"kubernetesVersion": version, "components": []}).encode()
    with pytest.raises(ConfigError) as refused:
        parse_components(data)
    assert len(str(refused.value)) < 300
