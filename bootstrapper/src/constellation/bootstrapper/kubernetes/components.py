"""The Kubernetes components lock and the hash checks that guard every installed binary.

The lock (``hack/kubernetes-components.lock.json``) pins, per component (kube-apiserver,
kube-controller-manager, kubeadm, kubectl, etcd, helm):

* ``version`` of the component,
* ``source``: the official release URL and its SHA-256 where known (``null`` otherwise),
  plus ``archive_member`` when the release is a tarball holding the binary,
* ``go``: the Go module, its version, the main package, the scratch module under
  ``hack/kubernetes-build/`` that resolves it, the ``-ldflags -X`` version stamps, and the Go
  toolchain,
* ``reference_build_sha256``: the SHA-256 of a local build, written only by the explicit
  ``record`` command.

Local builds are not guaranteed to be bit-identical across machines, so every cache carries
its own record (``hashes.json`` next to the binaries): written once when a binary enters the
cache, and checked on every later use. A differing hash is always an error
(:class:`ComponentHashError`), never a silent update.

The bootstrapper uses the same check for the components list sent by the CLI: a binary is
installed only after :func:`verify_file` accepted its SHA-256.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from constellation.bootstrapper.atomicfile import PUBLIC_MODE, write_atomic
from constellation.bootstrapper.kubernetes.errors import (
    ComponentHashError,
    ComponentLockError,
    ComponentMissingError,
)

LOCK_SCHEMA = 1
CACHE_RECORD_SCHEMA = 1
CACHE_RECORD_NAME = "hashes.json"
CACHE_ENV = "CONSTELLATION_K8S_CACHE"

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_COMPONENT_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_READ_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Return the lowercase hex SHA-256 of a file, read in chunks (binaries are ~100 MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256_hex(value: object, where: str) -> str:
    """Return ``value`` if it is a lowercase 64-digit hex SHA-256, else raise."""
    if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value):
        raise ComponentLockError(
            f"{where}: expected a SHA-256 as 64 lowercase hex digits, got {value!r}"
        )
    return value


def verify_file(name: str, path: Path, expected_sha256: str) -> Path:
    """Return ``path`` if its SHA-256 equals ``expected_sha256``; raise otherwise.

    This is the one gate before a binary is installed or executed: a missing file raises
    :class:`ComponentMissingError`, a different hash :class:`ComponentHashError`.
    """
    check_sha256_hex(expected_sha256, f"expected hash of {name}")
    if not path.is_file():
        raise ComponentMissingError(f"{name}: no file at {path}; run the ensure step first")
    actual = sha256_file(path)
    if not hmac.compare_digest(actual, expected_sha256):
        raise ComponentHashError(name, str(path), expected_sha256, actual)
    return path


@dataclass(frozen=True)
class ReleaseSource:
    """Where the official build of a component is published, and its pinned hash if known."""

    url: str
    sha256: str | None
    archive_member: str | None = None


@dataclass(frozen=True)
class GoBuild:
    """How to build a component from its Go module when the release download is unreachable."""

    module: str
    module_version: str
    package: str
    module_dir: str
    toolchain: str
    ldflags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Component:
    """One pinned binary."""

    name: str
    version: str
    source: ReleaseSource
    go: GoBuild
    reference_build_sha256: str | None = None

    def pin(self) -> str:
        """A short fingerprint of what is pinned (version, source, build recipe), not of hashes."""
        return _component_pin(self)


def _component_pin(component: Component) -> str:
    body = {
        "version": component.version,
        "source": [component.source.url, component.source.sha256, component.source.archive_member],
        "go": [
            component.go.module,
            component.go.module_version,
            component.go.package,
            component.go.toolchain,
            list(component.go.ldflags),
        ],
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ComponentLock:
    """The parsed components lock: one Kubernetes version and its pinned binaries."""

    kubernetes_version: str
    platform: str
    components: Mapping[str, Component] = field(default_factory=dict)

    def component(self, name: str) -> Component:
        """Return the pinned component ``name`` or raise a clear error listing the known ones."""
        try:
            return self.components[name]
        except KeyError:
            known = ", ".join(sorted(self.components))
            raise ComponentLockError(
                f"no component named {name!r} in the lock; known: {known}"
            ) from None

    @classmethod
    def from_json(cls, data: bytes) -> ComponentLock:
        """Parse and validate the lock's JSON bytes (pure: no file system access)."""
        try:
            raw = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ComponentLockError(f"components lock is not valid JSON: {err}") from err
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: object) -> ComponentLock:
        """Validate a decoded lock; every field is type-checked before use."""
        obj = _mapping(raw, "lock")
        if obj.get("schema") != LOCK_SCHEMA:
            raise ComponentLockError(
                f"lock: expected schema {LOCK_SCHEMA}, got {obj.get('schema')!r}"
            )
        version = _string(obj.get("kubernetes_version"), "lock.kubernetes_version")
        platform = _string(obj.get("platform"), "lock.platform")
        comps_raw = _mapping(obj.get("components"), "lock.components")
        components: dict[str, Component] = {}
        for name, entry in comps_raw.items():
            if not _COMPONENT_NAME.fullmatch(name):
                raise ComponentLockError(f"lock.components: invalid component name {name!r}")
            components[name] = _parse_component(name, entry)
        if not components:
            raise ComponentLockError("lock.components: expected at least one component")
        return cls(kubernetes_version=version, platform=platform, components=components)

    def to_dict(self) -> dict[str, Any]:
        """Render the lock in its canonical JSON shape (the inverse of :meth:`from_dict`)."""
        return {
            "schema": LOCK_SCHEMA,
            "kubernetes_version": self.kubernetes_version,
            "platform": self.platform,
            "components": {
                name: {
                    "version": comp.version,
                    "source": {
                        "url": comp.source.url,
                        "sha256": comp.source.sha256,
                        "archive_member": comp.source.archive_member,
                    },
                    "go": {
                        "module": comp.go.module,
                        "module_version": comp.go.module_version,
                        "package": comp.go.package,
                        "module_dir": comp.go.module_dir,
                        "toolchain": comp.go.toolchain,
                        "ldflags": list(comp.go.ldflags),
                    },
                    "reference_build_sha256": comp.reference_build_sha256,
                }
                for name, comp in sorted(self.components.items())
            },
        }


def load_lock(path: Path) -> ComponentLock:
    """Read and parse the lock file at ``path``."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ComponentLockError(f"cannot read components lock {path}: {err}") from err
    return ComponentLock.from_json(data)


def default_cache_dir(kubernetes_version: str, env: Mapping[str, str] | None = None) -> Path:
    """Return the per-version cache directory (outside any clone, shared by CI runs).

    ``$CONSTELLATION_K8S_CACHE`` wins; otherwise
    ``${XDG_CACHE_HOME:-$HOME/.cache}/constellation/kubernetes/<version>/``.
    """
    environ = os.environ if env is None else env
    override = environ.get(CACHE_ENV)
    if override:
        return Path(override)
    xdg = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME", "~")) / ".cache")
    return Path(xdg).expanduser() / "constellation" / "kubernetes" / kubernetes_version


@dataclass(frozen=True)
class CacheEntry:
    """The recorded hash of one cached binary, how it got there, and which pin it was made for.

    ``pin`` is :meth:`Component.pin` at the time: when the lock moves a component to another
    version, the cached file belongs to the old pin and is replaced, not "changed".
    """

    sha256: str
    origin: str
    pin: str = ""


@dataclass(frozen=True)
class CacheRecord:
    """``hashes.json`` of one cache directory: the hashes every later use is checked against."""

    entries: Mapping[str, CacheEntry]

    @classmethod
    def load(cls, directory: Path) -> CacheRecord:
        """Read the record of ``directory``; a missing record is an empty one."""
        path = directory / CACHE_RECORD_NAME
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return cls(entries={})
        except OSError as err:
            raise ComponentLockError(f"cannot read cache record {path}: {err}") from err
        try:
            raw = _mapping(json.loads(data), str(path))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ComponentLockError(f"cache record {path} is not valid JSON: {err}") from err
        if raw.get("schema") != CACHE_RECORD_SCHEMA:
            raise ComponentLockError(
                f"{path}: expected schema {CACHE_RECORD_SCHEMA}, got {raw.get('schema')!r}"
            )
        entries: dict[str, CacheEntry] = {}
        for name, entry in _mapping(raw.get("binaries"), f"{path}.binaries").items():
            item = _mapping(entry, f"{path}.binaries.{name}")
            pin = item.get("pin", "")
            entries[name] = CacheEntry(
                sha256=check_sha256_hex(item.get("sha256"), f"{path}.binaries.{name}.sha256"),
                origin=_string(item.get("origin"), f"{path}.binaries.{name}.origin"),
                pin=pin if isinstance(pin, str) else "",
            )
        return cls(entries=entries)

    def with_entry(self, name: str, entry: CacheEntry) -> CacheRecord:
        """Return a copy with ``name`` set; the caller decides whether a change is allowed."""
        return CacheRecord(entries={**self.entries, name: entry})

    def save(self, directory: Path) -> None:
        """Write the record atomically next to the binaries."""
        body = {
            "schema": CACHE_RECORD_SCHEMA,
            "binaries": {
                name: {"sha256": e.sha256, "origin": e.origin, "pin": e.pin}
                for name, e in sorted(self.entries.items())
            },
        }
        data = (json.dumps(body, indent=2) + "\n").encode()
        write_atomic(directory / CACHE_RECORD_NAME, data, mode=PUBLIC_MODE)


@dataclass(frozen=True)
class InstalledComponents:
    """Resolved, hash-checked paths of the binaries in one cache directory.

    Built by :func:`verified_components`; holding one means every file was checked against
    its recorded SHA-256 when it was built.
    """

    directory: Path
    paths: Mapping[str, Path]

    def path(self, name: str) -> Path:
        """Return the checked path of binary ``name``."""
        try:
            return self.paths[name]
        except KeyError:
            raise ComponentMissingError(
                f"{name} is not among the verified components in {self.directory}"
            ) from None


def verified_components(
    lock: ComponentLock, directory: Path, names: tuple[str, ...] | None = None
) -> InstalledComponents:
    """Check cached binaries against the cache record (and a pinned release hash if any).

    Raises :class:`ComponentMissingError` for a binary or record entry that does not exist and
    :class:`ComponentHashError` for a file whose hash differs: nothing unverified is handed out.
    """
    record = CacheRecord.load(directory)
    wanted = names if names is not None else tuple(sorted(lock.components))
    paths: dict[str, Path] = {}
    for name in wanted:
        component = lock.component(name)
        entry = record.entries.get(name)
        if entry is None:
            raise ComponentMissingError(
                f"{name}: no recorded hash in {directory / CACHE_RECORD_NAME}; "
                "run `hack/kubernetes-components ensure`"
            )
        if entry.pin != component.pin():
            raise ComponentMissingError(
                f"{name}: the cached file was made for another pin of the lock (version or "
                "build recipe changed); run `hack/kubernetes-components ensure`"
            )
        pinned = component.source.sha256
        if (
            entry.origin == "release"
            and pinned is not None
            and not hmac.compare_digest(entry.sha256, pinned)
        ):
            raise ComponentHashError(name, str(directory / name), pinned, entry.sha256)
        paths[name] = verify_file(name, directory / name, entry.sha256)
    return InstalledComponents(directory=directory, paths=paths)


def _parse_component(name: str, entry: object) -> Component:
    where = f"lock.components.{name}"
    obj = _mapping(entry, where)
    source = _mapping(obj.get("source"), f"{where}.source")
    go = _mapping(obj.get("go"), f"{where}.go")
    source_sha = source.get("sha256")
    member = source.get("archive_member")
    ref = obj.get("reference_build_sha256")
    ldflags = go.get("ldflags", [])
    if not isinstance(ldflags, list) or not all(isinstance(x, str) for x in ldflags):
        raise ComponentLockError(f"{where}.go.ldflags: expected a list of strings")
    return Component(
        name=name,
        version=_string(obj.get("version"), f"{where}.version"),
        source=ReleaseSource(
            url=_string(source.get("url"), f"{where}.source.url"),
            sha256=None
            if source_sha is None
            else check_sha256_hex(source_sha, f"{where}.source.sha256"),
            archive_member=None
            if member is None
            else _string(member, f"{where}.source.archive_member"),
        ),
        go=GoBuild(
            module=_string(go.get("module"), f"{where}.go.module"),
            module_version=_string(go.get("module_version"), f"{where}.go.module_version"),
            package=_string(go.get("package"), f"{where}.go.package"),
            module_dir=_string(go.get("module_dir"), f"{where}.go.module_dir"),
            toolchain=_string(go.get("toolchain"), f"{where}.go.toolchain"),
            ldflags=tuple(ldflags),
        ),
        reference_build_sha256=None
        if ref is None
        else check_sha256_hex(ref, f"{where}.reference_build_sha256"),
    )


def _mapping(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ComponentLockError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def _string(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ComponentLockError(f"{where}: expected a non-empty string, got {value!r}")
    return value
