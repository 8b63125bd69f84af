"""The node's persistent state: what it must remember across reboots once initialized.

Written once, when the node has joined or initialized the cluster (after the node lock was
taken), and read on every boot to decide between "first boot" and "rejoin". The file is written
atomically with mode 0600 and read back strictly: any deviation from the format (unknown or
missing keys, wrong lengths, bad encodings, another version) raises ``NodeStateError`` instead
of producing a half-valid state. Format (version 1, binary values in standard base64)::

    {"version": 1, "clusterID": "<32 bytes>", "measurementSalt": "<32 bytes>",
     "role": "control-plane", "diskUUID": "<lower-case LUKS UUID>"}

The cluster ID and the measurement salt are not secret (the cluster ID is public in
``constellation verify``), but nothing in this file needs to be readable by others.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from constellation.attestation.identity import Role
from constellation.bootstrapper.atomicfile import SECRET_MODE, write_atomic
from constellation.bootstrapper.errors import NodeStateError

NODE_STATE_FORMAT_VERSION = 1
CLUSTER_ID_LENGTH = 32
MEASUREMENT_SALT_LENGTH = 32
_MAX_FILE_SIZE = 64 * 1024
_UUID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_KEYS = frozenset({"version", "clusterID", "measurementSalt", "role", "diskUUID"})


@dataclass(frozen=True)
class NodeState:
    """The facts a node keeps about itself; validated on construction."""

    cluster_id: bytes
    measurement_salt: bytes
    role: Role
    disk_uuid: str

    def __post_init__(self) -> None:
        if len(self.cluster_id) != CLUSTER_ID_LENGTH:
            raise NodeStateError(
                f"clusterID: expected {CLUSTER_ID_LENGTH} bytes, got {len(self.cluster_id)}"
            )
        if len(self.measurement_salt) != MEASUREMENT_SALT_LENGTH:
            raise NodeStateError(
                f"measurementSalt: expected {MEASUREMENT_SALT_LENGTH} bytes, "
                f"got {len(self.measurement_salt)}"
            )
        if not isinstance(self.role, Role):
            raise NodeStateError(f"role: expected a Role, got {self.role!r}")
        if not _UUID_PATTERN.fullmatch(self.disk_uuid):
            raise NodeStateError(
                f"diskUUID: expected a lower-case LUKS UUID, got {self.disk_uuid!r}"
            )

    def to_json(self) -> bytes:
        document = {
            "version": NODE_STATE_FORMAT_VERSION,
            "clusterID": base64.b64encode(self.cluster_id).decode(),
            "measurementSalt": base64.b64encode(self.measurement_salt).decode(),
            "role": self.role.value,
            "diskUUID": self.disk_uuid,
        }
        return (json.dumps(document, indent=2) + "\n").encode()


def parse_node_state(data: bytes, *, source: str = "node state") -> NodeState:
    """Parse a node-state document strictly; raise ``NodeStateError`` naming the field."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise NodeStateError(f"{source}: corrupt, not valid JSON: {err}") from err
    if not isinstance(document, dict):
        raise NodeStateError(f"{source}: corrupt, expected a JSON object")
    unknown = sorted(set(document) - _KEYS)
    missing = sorted(_KEYS - set(document))
    if unknown or missing:
        raise NodeStateError(
            f"{source}: corrupt, unknown key(s) {unknown or 'none'}, "
            f"missing key(s) {missing or 'none'}"
        )
    version = document["version"]
    if type(version) is not int or version != NODE_STATE_FORMAT_VERSION:
        raise NodeStateError(
            f"{source}: version: expected {NODE_STATE_FORMAT_VERSION}, got {version!r}"
        )
    role_text = document["role"]
    try:
        role = Role(role_text)
    except ValueError as err:
        raise NodeStateError(f"{source}: role: unknown role {role_text!r}") from err
    disk_uuid = document["diskUUID"]
    if not isinstance(disk_uuid, str):
        raise NodeStateError(f"{source}: diskUUID: expected a string")
    cluster_id = _base64(document["clusterID"], f"{source}: clusterID")
    measurement_salt = _base64(document["measurementSalt"], f"{source}: measurementSalt")
    try:
        return NodeState(
            cluster_id=cluster_id,
            measurement_salt=measurement_salt,
            role=role,
            disk_uuid=disk_uuid,
        )
    except NodeStateError as err:
        raise NodeStateError(f"{source}: {err}") from err


def _base64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise NodeStateError(f"{where}: expected a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise NodeStateError(f"{where}: not valid base64") from err


def save_node_state(path: Path, state: NodeState) -> None:
    """Persist ``state`` atomically (0600)."""
    write_atomic(path, state.to_json(), mode=SECRET_MODE)


def load_node_state(path: Path) -> NodeState:
    """Read the node state back; a missing file is ``NodeStateError`` too (check ``exists``)."""
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(_MAX_FILE_SIZE + 1)
    except OSError as err:
        raise NodeStateError(f"cannot read the node state {path}: {err.strerror or err}") from err
    if len(data) > _MAX_FILE_SIZE:
        raise NodeStateError(f"{path}: corrupt, larger than {_MAX_FILE_SIZE} bytes")
    return parse_node_state(data, source=str(path))
