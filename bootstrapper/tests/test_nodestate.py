from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from constellation.attestation.identity import Role
from constellation.bootstrapper.errors import NodeStateError
from constellation.bootstrapper.nodestate import (
    NodeState,
    load_node_state,
    parse_node_state,
    save_node_state,
)

UUID = "d53e3d6d-94d5-493b-9e8a-aafa7544396a"


def _state() -> NodeState:
    return NodeState(
        cluster_id=os.urandom(32),
        measurement_salt=os.urandom(32),
        role=Role.CONTROL_PLANE,
        disk_uuid=UUID,
    )


def _document(**changes: Any) -> bytes:
    document = json.loads(_state().to_json())
    document.update(changes)
    return json.dumps(document).encode()


def test_round_trip_is_atomic_and_private(tmp_path: Path) -> None:
    state = _state()
    path = tmp_path / "node-state.json"
    save_node_state(path, state)
    assert load_node_state(path) == state
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_overwrite_replaces_state(tmp_path: Path) -> None:
    path = tmp_path / "node-state.json"
    save_node_state(path, _state())
    second = _state()
    save_node_state(path, second)
    assert load_node_state(path) == second


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not valid JSON"),
        (b'{"version": 1', "not valid JSON"),
        (b"[]", "expected a JSON object"),
        (_document(extra="x"), "unknown key"),
        (_document(version=2), "version: expected 1"),
        (_document(role="admin"), "unknown role"),
        (_document(clusterID="!!!"), "clusterID: not valid base64"),
        (_document(clusterID=base64.b64encode(b"x" * 31).decode()), "expected 32 bytes, got 31"),
        (_document(measurementSalt=base64.b64encode(b"x" * 33).decode()), "measurementSalt"),
        (_document(measurementSalt=5), "expected a base64 string"),
        (_document(diskUUID=UUID.upper()), "diskUUID"),
        (_document(diskUUID="not-a-uuid"), "diskUUID"),
    ],
)
def test_corrupt_state_is_a_typed_error(data: bytes, message: str) -> None:
    with pytest.raises(NodeStateError, match=message):
        parse_node_state(data)


def test_missing_key_is_reported(tmp_path: Path) -> None:
    document = json.loads(_state().to_json())
    del document["diskUUID"]
    path = tmp_path / "node-state.json"
    path.write_text(json.dumps(document))
    with pytest.raises(NodeStateError, match="missing key"):
        load_node_state(path)


def test_missing_file_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(NodeStateError, match="cannot read the node state"):
        load_node_state(tmp_path / "absent.json")


def test_invalid_state_cannot_be_constructed() -> None:
    with pytest.raises(NodeStateError, match="clusterID"):
        NodeState(b"short", os.urandom(32), Role.WORKER, UUID)
