"""The workspace: the directory that holds everything the CLI knows about one cluster.

Layout (fixed names, relative to the workspace root, ``--workspace/-C``)::

    constellation-conf.yaml          the configuration (public; commented YAML)
    constellation-state.yaml         what the CLI learned when creating the cluster (public)
    constellation-mastersecret.json  the master secret (mode 0600; only the admin may read it)
    logs/                            logs of long-running commands

Every file is written through ``constellation.bootstrapper.atomicfile.write_atomic``: an
interrupted command leaves the old file, never a half-written one, and the master secret is
never visible with a mode wider than 0600. Reading is strict: a corrupt file is a
``WorkspaceError`` naming the file and what to do.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from constellation.attestation.boundedparse import load_yaml, loads_json
from constellation.bootstrapper.atomicfile import PUBLIC_MODE, SECRET_MODE, write_atomic
from constellation.bootstrapper.errors import AtomicWriteError, MetadataError
from constellation.bootstrapper.metadata import Endpoint
from constellation.cli.config import Config, parse_config, render_config
from constellation.cli.errors import ConfigExistsError, WorkspaceError

CONFIG_FILE = "constellation-conf.yaml"
STATE_FILE = "constellation-state.yaml"
MASTER_SECRET_FILE = "constellation-mastersecret.json"  # noqa: S105 (a file name)
LOGS_DIR = "logs"

MASTER_KEY_MIN_LENGTH = 16
MASTER_KEY_DEFAULT_LENGTH = 32
MASTER_SALT_LENGTH = 32
CLUSTER_ID_LENGTH = 32
STATE_VERSION = "v1"
_MAX_FILE_SIZE = 1024 * 1024


class MasterSecret:
    """The cluster's master key and salt; ``repr``/``str`` never show them."""

    __slots__ = ("_key", "_salt")

    def __init__(self, key: bytes, salt: bytes) -> None:
        if len(key) < MASTER_KEY_MIN_LENGTH:
            raise WorkspaceError(
                f"the master key must be at least {MASTER_KEY_MIN_LENGTH} bytes, got {len(key)}"
            )
        if len(salt) != MASTER_SALT_LENGTH:
            raise WorkspaceError(
                f"the master salt must be {MASTER_SALT_LENGTH} bytes, got {len(salt)}"
            )
        self._key = bytes(key)
        self._salt = bytes(salt)

    @classmethod
    def generate(cls) -> MasterSecret:
        return cls(
            secrets.token_bytes(MASTER_KEY_DEFAULT_LENGTH), secrets.token_bytes(MASTER_SALT_LENGTH)
        )

    @property
    def key(self) -> bytes:
        return self._key

    @property
    def salt(self) -> bytes:
        return self._salt

    def __repr__(self) -> str:
        return "MasterSecret(<redacted>)"

    __str__ = __repr__

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "key": base64.b64encode(self._key).decode(),
                "salt": base64.b64encode(self._salt).decode(),
            }
        ).encode()


@dataclass(frozen=True)
class NodeRecord:
    """One node of the cluster as the CLI knows it."""

    name: str
    role: str
    verify_endpoint: Endpoint | None = None


@dataclass(frozen=True)
class ClusterState:
    """``constellation-state.yaml``: public facts about the created cluster.

    ``cluster_id`` is known after init; ``verify_endpoint`` is the default target of
    ``constellation verify``.
    """

    name: str = ""
    cluster_id: bytes | None = None
    measurement_salt: bytes | None = None
    init_endpoint: Endpoint | None = None
    verify_endpoint: Endpoint | None = None
    nodes: tuple[NodeRecord, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.cluster_id is not None and len(self.cluster_id) != CLUSTER_ID_LENGTH:
            raise WorkspaceError(
                f"clusterID must be {CLUSTER_ID_LENGTH} bytes, got {len(self.cluster_id)}"
            )
        if self.measurement_salt is not None and len(self.measurement_salt) != 32:
            raise WorkspaceError(
                f"measurementSalt must be 32 bytes, got {len(self.measurement_salt)}"
            )

    def to_document(self) -> dict[str, Any]:
        def b64(value: bytes | None) -> str | None:
            return None if value is None else base64.b64encode(value).decode()

        def ep(value: Endpoint | None) -> str | None:
            return None if value is None else str(value)

        return {
            "version": STATE_VERSION,
            "name": self.name,
            "clusterID": b64(self.cluster_id),
            "measurementSalt": b64(self.measurement_salt),
            "initEndpoint": ep(self.init_endpoint),
            "verifyEndpoint": ep(self.verify_endpoint),
            "nodes": [
                {"name": n.name, "role": n.role, "verifyEndpoint": ep(n.verify_endpoint)}
                for n in self.nodes
            ],
        }


_STATE_KEYS = {
    "version",
    "name",
    "clusterID",
    "measurementSalt",
    "initEndpoint",
    "verifyEndpoint",
    "nodes",
}
_NODE_KEYS = {"name", "role", "verifyEndpoint"}


def parse_state(document: Any, *, source: str) -> ClusterState:
    """Strictly parse the state document; raise ``WorkspaceError`` naming the key."""
    hint = "restore the file from a backup or recreate the cluster"

    def fail(message: str) -> WorkspaceError:
        return WorkspaceError(f"{source} is corrupt: {message}", hint=hint)

    if not isinstance(document, dict):
        raise fail("expected a mapping")
    unknown = sorted(set(document) - _STATE_KEYS)
    if unknown:
        raise fail(f"unknown key(s) {', '.join(map(str, unknown))}")
    if document.get("version") != STATE_VERSION:
        raise fail(f"version: expected {STATE_VERSION}, got {document.get('version')!r}")

    def b64(key: str) -> bytes | None:
        value = document.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise fail(f"{key}: expected base64 text")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise fail(f"{key}: not valid base64") from None

    def endpoint(value: Any, where: str) -> Endpoint | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise fail(f"{where}: expected host:port")
        try:
            return Endpoint.parse(value, where=where)
        except MetadataError as err:
            raise fail(str(err)) from None

    nodes_raw = document.get("nodes") or []
    if not isinstance(nodes_raw, list):
        raise fail("nodes: expected a list")
    nodes = []
    for i, node in enumerate(nodes_raw):
        if not isinstance(node, dict) or set(node) - _NODE_KEYS:
            raise fail(f"nodes[{i}]: expected a mapping with keys {sorted(_NODE_KEYS)}")
        name, role = node.get("name"), node.get("role")
        if not isinstance(name, str) or not isinstance(role, str):
            raise fail(f"nodes[{i}]: name and role must be strings")
        nodes.append(
            NodeRecord(
                name, role, endpoint(node.get("verifyEndpoint"), f"nodes[{i}].verifyEndpoint")
            )
        )
    name = document.get("name", "")
    if not isinstance(name, str):
        raise fail("name: expected a string")
    try:
        return ClusterState(
            name=name,
            cluster_id=b64("clusterID"),
            measurement_salt=b64("measurementSalt"),
            init_endpoint=endpoint(document.get("initEndpoint"), "initEndpoint"),
            verify_endpoint=endpoint(document.get("verifyEndpoint"), "verifyEndpoint"),
            nodes=tuple(nodes),
        )
    except WorkspaceError as err:
        raise fail(str(err)) from None


class Workspace:
    """Access to the files of one workspace directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    @property
    def master_secret_path(self) -> Path:
        return self.root / MASTER_SECRET_FILE

    @property
    def logs_dir(self) -> Path:
        return self.root / LOGS_DIR

    def log_path(self, name: str) -> Path:
        """A file under ``logs/`` for a long-running command (the directory is created 0700)."""
        if not name or "/" in name or name in (".", ".."):
            raise WorkspaceError(f"invalid log file name {name!r}")
        self.ensure_root()
        try:
            self.logs_dir.mkdir(mode=0o700, exist_ok=True)
        except OSError as err:
            raise WorkspaceError(
                f"cannot create {self.logs_dir}: {err.strerror or err}",
                hint="check the workspace directory",
            ) from None
        return self.logs_dir / name

    def ensure_root(self) -> None:
        if not self.root.is_dir():
            raise WorkspaceError(
                f"the workspace {self.root} is not a directory",
                hint="create it or pass an existing directory with --workspace/-C",
            )

    # -- configuration
    def load_config(self) -> Config:
        data = self._read(
            self.config_path, hint="run `constellation config generate` to create one"
        )
        return parse_config(data, source=str(self.config_path.name))

    def save_config(self, config: Config, *, overwrite: bool) -> None:
        self.ensure_root()
        if not overwrite and self.config_path.exists():
            raise ConfigExistsError(
                f"{self.config_path} already exists",
                hint="pass --force to overwrite it, or move it away first",
            )
        self._write(self.config_path, render_config(config).encode(), PUBLIC_MODE)

    # -- state
    def load_state(self) -> ClusterState:
        data = self._read(self.state_path, hint="the cluster was not created from this workspace")
        document = load_yaml(
            data,
            max_size=_MAX_FILE_SIZE,
            what=f"{self.state_path} is corrupt",
            error=lambda message: WorkspaceError(message, hint="restore it from a backup"),
        )
        return parse_state(document, source=str(self.state_path.name))

    def save_state(self, state: ClusterState) -> None:
        self.ensure_root()
        text = yaml.safe_dump(state.to_document(), sort_keys=False)
        self._write(self.state_path, text.encode(), PUBLIC_MODE)

    # -- master secret
    def load_master_secret(self) -> MasterSecret:
        path = self.master_secret_path
        data = self._read(path, hint="the master secret is needed to recover the cluster")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise WorkspaceError(
                f"{path} is readable by others (mode {mode:04o})",
                hint=f"run `chmod 600 {path}` and consider the secret exposed",
            )
        try:
            document = loads_json(data, max_size=_MAX_FILE_SIZE, error=ValueError)
            if not isinstance(document, dict) or set(document) != {"key", "salt"}:
                raise ValueError("expected exactly the keys 'key' and 'salt'")
            key = base64.b64decode(document["key"], validate=True)
            salt = base64.b64decode(document["salt"], validate=True)
        except (ValueError, TypeError, binascii.Error) as err:
            # The exception text may quote file content; say only what is wrong with the shape.
            reason = str(err) if isinstance(err, ValueError) and "expected" in str(err) else ""
            raise WorkspaceError(
                f"{path} is corrupt{': ' + reason if reason else ''}",
                hint="restore it from a backup",
            ) from None
        return MasterSecret(key, salt)

    def save_master_secret(self, secret: MasterSecret, *, overwrite: bool = False) -> None:
        self.ensure_root()
        if not overwrite and self.master_secret_path.exists():
            raise WorkspaceError(
                f"{self.master_secret_path} already exists",
                hint="a workspace holds one cluster; use a new workspace directory",
            )
        self._write(self.master_secret_path, secret.to_json(), SECRET_MODE)

    # -- files
    def _read(self, path: Path, *, hint: str) -> bytes:
        try:
            with path.open("rb") as handle:
                data = handle.read(_MAX_FILE_SIZE + 1)
        except FileNotFoundError:
            raise WorkspaceError(f"{path} does not exist", hint=hint) from None
        except OSError as err:
            raise WorkspaceError(f"cannot read {path}: {err.strerror or err}", hint=hint) from None
        if len(data) > _MAX_FILE_SIZE:
            raise WorkspaceError(f"{path} is larger than {_MAX_FILE_SIZE} bytes", hint=hint)
        return data

    def _write(self, path: Path, data: bytes, mode: int) -> None:
        try:
            write_atomic(path, data, mode=mode)
        except AtomicWriteError as err:
            raise WorkspaceError(str(err), hint="check the workspace directory") from err
