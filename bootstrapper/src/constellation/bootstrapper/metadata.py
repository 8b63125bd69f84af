"""Instance metadata: what a node learns about itself and its cluster before it is attested.

On a cloud this comes from the provider's metadata service. Mini mode has no cloud, so the CLI
writes one JSON file per node and the node reads it through :class:`FileMetadata`; the rest of
the bootstrapper sees only the :class:`MetadataProvider` protocol and does not know which one
it has.

The file format (version 1), validated strictly — unknown or missing keys, a wrong role, an
address that is not an IP address or a port outside 1..65535 are refused with the key path::

    {
      "version": 1,
      "self": {"name": "mini-cp-0", "role": "control-plane", "privateIP": "127.0.0.1"},
      "initSecretHash": "$2b$12$...",
      "controlPlaneEndpoints": ["127.0.0.1:30090"]
    }

Nothing in this file is secret: the init secret appears only as its bcrypt hash.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from constellation.attestation.boundedparse import loads_json
from constellation.attestation.identity import Role
from constellation.bootstrapper.atomicfile import PUBLIC_MODE, write_atomic
from constellation.bootstrapper.errors import MetadataError

METADATA_FORMAT_VERSION = 1
_MAX_FILE_SIZE = 1024 * 1024
_MAX_NAME_LENGTH = 253


@dataclass(frozen=True, order=True)
class Endpoint:
    """A ``host:port`` endpoint whose host is a literal IP address."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str, *, where: str = "endpoint") -> Endpoint:
        """Parse ``host:port`` or ``[v6]:port``; raise ``MetadataError`` naming ``where``."""
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise MetadataError(f"{where}: expected host:port, got {text!r}")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            address = ipaddress.ip_address(host)
        except ValueError as err:
            raise MetadataError(f"{where}: {host!r} is not an IP address") from err
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise MetadataError(f"{where}: port must be 1..65535, got {port_text!r}")
        return cls(str(address), int(port_text))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class InstanceMetadata:
    """Facts about this node. ``init_secret_hash`` is a bcrypt hash, not a secret."""

    name: str
    role: Role
    private_ip: str
    init_secret_hash: bytes
    control_plane_endpoints: tuple[Endpoint, ...]

    def to_json(self) -> bytes:
        document = {
            "version": METADATA_FORMAT_VERSION,
            "self": {"name": self.name, "role": self.role.value, "privateIP": self.private_ip},
            "initSecretHash": self.init_secret_hash.decode("ascii"),
            "controlPlaneEndpoints": [str(e) for e in self.control_plane_endpoints],
        }
        return (json.dumps(document, indent=2) + "\n").encode()


@runtime_checkable
class MetadataProvider(Protocol):
    """Where the bootstrapper gets its instance metadata from (cloud API or mini-mode file)."""

    def self(self) -> InstanceMetadata:
        """This node's metadata."""
        ...

    def init_secret_hash(self) -> bytes:
        """The bcrypt hash the ``Init`` request's secret is checked against."""
        ...

    def control_plane_endpoints(self) -> Sequence[Endpoint]:
        """Where the join client finds the JoinService (control-plane nodes)."""
        ...


def parse_metadata(data: bytes, *, source: str = "metadata") -> InstanceMetadata:
    """Parse and validate a metadata document; every error names ``source`` and the key path."""
    document = loads_json(data, max_size=_MAX_FILE_SIZE, error=MetadataError, what=source)
    top = _object(document, source, {"version", "self", "initSecretHash", "controlPlaneEndpoints"})
    version = top["version"]
    if type(version) is not int or version != METADATA_FORMAT_VERSION:
        raise MetadataError(
            f"{source}: version: expected {METADATA_FORMAT_VERSION}, got {version!r}"
        )
    node = _object(top["self"], f"{source}: self", {"name", "role", "privateIP"})
    name = _string(node["name"], f"{source}: self.name")
    if len(name) > _MAX_NAME_LENGTH:
        raise MetadataError(f"{source}: self.name: longer than {_MAX_NAME_LENGTH} characters")
    role_text = _string(node["role"], f"{source}: self.role")
    try:
        role = Role(role_text)
    except ValueError as err:
        allowed = ", ".join(r.value for r in Role)
        raise MetadataError(
            f"{source}: self.role: expected one of {allowed}, got {role_text!r}"
        ) from err
    ip_text = _string(node["privateIP"], f"{source}: self.privateIP")
    try:
        private_ip = str(ipaddress.ip_address(ip_text))
    except ValueError as err:
        raise MetadataError(f"{source}: self.privateIP: {ip_text!r} is not an IP address") from err
    hash_text = _string(top["initSecretHash"], f"{source}: initSecretHash")
    if not hash_text.startswith(("$2a$", "$2b$", "$2y$")):
        raise MetadataError(f"{source}: initSecretHash: expected a bcrypt hash ($2b$...)")
    endpoints_raw = top["controlPlaneEndpoints"]
    if not isinstance(endpoints_raw, list):
        raise MetadataError(f"{source}: controlPlaneEndpoints: expected a list")
    endpoints = tuple(
        Endpoint.parse(
            _string(item, f"{source}: controlPlaneEndpoints[{i}]"),
            where=f"{source}: controlPlaneEndpoints[{i}]",
        )
        for i, item in enumerate(endpoints_raw)
    )
    return InstanceMetadata(
        name=name,
        role=role,
        private_ip=private_ip,
        init_secret_hash=hash_text.encode("ascii"),
        control_plane_endpoints=endpoints,
    )


def _object(value: Any, where: str, keys: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise MetadataError(f"{where}: expected an object, got {type(value).__name__}")
    unknown = sorted(set(value) - keys)
    if unknown:
        raise MetadataError(f"{where}: unknown key(s) {', '.join(unknown)}")
    missing = sorted(keys - set(value))
    if missing:
        raise MetadataError(f"{where}: missing key(s) {', '.join(missing)}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise MetadataError(f"{where}: expected a non-empty string, got {value!r}")
    if not value.isascii() or not value.isprintable():
        raise MetadataError(f"{where}: must be printable ASCII")
    return value


class FileMetadata:
    """Mini-mode metadata: one JSON file per node, written by the CLI.

    The file is re-read on every call, so the CLI can update the list of control-plane
    endpoints while the node waits to join.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> InstanceMetadata:
        try:
            with self.path.open("rb") as handle:
                data = handle.read(_MAX_FILE_SIZE + 1)
        except OSError as err:
            raise MetadataError(
                f"cannot read the instance metadata {self.path}: {err.strerror or err}; "
                "mini mode writes it when the node is created"
            ) from err
        if len(data) > _MAX_FILE_SIZE:
            raise MetadataError(f"{self.path}: larger than {_MAX_FILE_SIZE} bytes")
        return parse_metadata(data, source=str(self.path))

    def self(self) -> InstanceMetadata:
        return self.load()

    def init_secret_hash(self) -> bytes:
        return self.load().init_secret_hash

    def control_plane_endpoints(self) -> Sequence[Endpoint]:
        return self.load().control_plane_endpoints


def write_metadata_file(path: Path, metadata: InstanceMetadata) -> None:
    """Write a node's metadata file atomically (used by the CLI in mini mode)."""
    # Round-trip through the parser: never write a file the node would refuse.
    parse_metadata(metadata.to_json(), source="metadata to write")
    write_atomic(path, metadata.to_json(), mode=PUBLIC_MODE)
