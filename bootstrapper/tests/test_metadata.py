from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from constellation.attestation.identity import Role
from constellation.bootstrapper.errors import MetadataError
from constellation.bootstrapper.metadata import (
    Endpoint,
    FileMetadata,
    InstanceMetadata,
    MetadataProvider,
    parse_metadata,
    write_metadata_file,
)

HASH = b"$2b$04$abcdefghijklmnopqrstuu5Vt1S2n3M4b5V6c7X8z9A0B1C2D3E4F5"


def _document(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "version": 1,
        "self": {"name": "mini-cp-0", "role": "control-plane", "privateIP": "127.0.0.1"},
        "initSecretHash": HASH.decode(),
        "controlPlaneEndpoints": ["127.0.0.1:30090", "[::1]:9090"],
    }
    document.update(changes)
    return document


def _encode(document: Any) -> bytes:
    return json.dumps(document).encode()


def test_file_metadata_round_trip(tmp_path: Path) -> None:
    metadata = InstanceMetadata(
        name="mini-worker-1",
        role=Role.WORKER,
        private_ip="127.0.0.2",
        init_secret_hash=HASH,
        control_plane_endpoints=(Endpoint("127.0.0.1", 30090),),
    )
    path = tmp_path / "node.json"
    write_metadata_file(path, metadata)
    provider = FileMetadata(path)
    assert isinstance(provider, MetadataProvider)
    assert provider.self() == metadata
    assert provider.init_secret_hash() == HASH
    assert list(provider.control_plane_endpoints()) == [Endpoint("127.0.0.1", 30090)]


def test_file_is_reread_on_every_call(tmp_path: Path) -> None:
    path = tmp_path / "node.json"
    path.write_bytes(_encode(_document(controlPlaneEndpoints=[])))
    provider = FileMetadata(path)
    assert list(provider.control_plane_endpoints()) == []
    path.write_bytes(_encode(_document(controlPlaneEndpoints=["127.0.0.1:1"])))
    assert [str(e) for e in provider.control_plane_endpoints()] == ["127.0.0.1:1"]


def test_ipv6_endpoint_renders_with_brackets() -> None:
    metadata = parse_metadata(_encode(_document()))
    assert [str(e) for e in metadata.control_plane_endpoints] == ["127.0.0.1:30090", "[::1]:9090"]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_document(extra=1), "unknown key"),
        ({k: v for k, v in _document().items() if k != "self"}, "missing key"),
        (_document(version=2), "version: expected 1"),
        (_document(version=True), "version: expected 1"),
        (
            _document(self={"name": "n", "role": "admin", "privateIP": "127.0.0.1"}),
            "self.role: expected one of",
        ),
        (
            _document(self={"name": "n", "role": "worker", "privateIP": "localhost"}),
            "self.privateIP",
        ),
        (_document(self={"name": "", "role": "worker", "privateIP": "127.0.0.1"}), "self.name"),
        (
            _document(self={"name": "n", "role": "worker", "privateIP": "127.0.0.1", "x": 1}),
            "self: unknown key",
        ),
        (_document(initSecretHash="plaintext"), "initSecretHash: expected a bcrypt hash"),
        (_document(controlPlaneEndpoints="127.0.0.1:1"), "controlPlaneEndpoints: expected a list"),
        (_document(controlPlaneEndpoints=["127.0.0.1"]), r"controlPlaneEndpoints\[0\]"),
        (_document(controlPlaneEndpoints=["127.0.0.1:0"]), "port must be"),
        (_document(controlPlaneEndpoints=["127.0.0.1:70000"]), "port must be"),
        (_document(controlPlaneEndpoints=["example.com:80"]), "not an IP address"),
        ([], "expected an object"),
    ],
)
def test_invalid_documents_are_refused_with_key_path(document: Any, message: str) -> None:
    with pytest.raises(MetadataError, match=message):
        parse_metadata(_encode(document))


def test_not_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.json"
    path.write_bytes(b"\xff{")
    with pytest.raises(MetadataError, match="not valid JSON"):
        FileMetadata(path).self()


def test_missing_file_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="cannot read the instance metadata"):
        FileMetadata(tmp_path / "absent.json").self()


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.json"
    path.write_bytes(b" " * (1024 * 1024 + 1))
    with pytest.raises(MetadataError, match="larger than"):
        FileMetadata(path).self()


def test_writer_refuses_what_the_reader_would_refuse(tmp_path: Path) -> None:
    bad = InstanceMetadata(
        name="n",
        role=Role.WORKER,
        private_ip="127.0.0.1",
        init_secret_hash=b"not-bcrypt",
        control_plane_endpoints=(),
    )
    with pytest.raises(MetadataError):
        write_metadata_file(tmp_path / "node.json", bad)
    assert not (tmp_path / "node.json").exists()
