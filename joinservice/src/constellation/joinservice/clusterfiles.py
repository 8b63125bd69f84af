"""The cluster's files the JoinService hands to joining nodes.

- the cluster CA certificate (every node) and the discovery hash derived from it;
- the control-plane PKI (only for control-plane nodes): the kubeadm file set under the PKI
  directory (``ca.crt``/``ca.key``, ``sa.key``/``sa.pub``, the front-proxy CA, the etcd CA);
- the components file: the Kubernetes version and the list of artifacts a node installs, each
  with its SHA-256, as the CLI wrote it (JSON ``{"kubernetesVersion": "v1.31.1",
  "components": [{"name", "url", "hash", "installPath", "extract"}]}``).

Files are re-read on every request: they are small, and an upgrade replaces them in place.
``parse_components`` is pure and strict, because a node installs exactly what it is told.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from constellation.attestation.boundedparse import loads_json
from constellation.attestation.secret import SecretBytes
from constellation.joinservice.errors import ConfigError

#: kubeadm's control-plane PKI, relative to the PKI directory, in the order nodes get them.
CONTROL_PLANE_FILES: Final = (
    "ca.crt",
    "ca.key",
    "sa.key",
    "sa.pub",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "etcd/ca.crt",
    "etcd/ca.key",
)
MAX_COMPONENTS_FILE: Final = 1 << 20
MAX_PKI_FILE: Final = 64 * 1024
_HASH = re.compile(r"sha256:[0-9a-f]{64}")
_VERSION = re.compile(r"v\d+\.\d+\.\d+([-+][0-9A-Za-z.+-]+)?")


@dataclass(frozen=True)
class Component:
    name: str
    url: str
    hash: str
    install_path: str
    extract: bool


@dataclass(frozen=True)
class Components:
    kubernetes_version: str
    components: tuple[Component, ...]


def parse_components(data: bytes) -> Components:
    """Parse the components file; raise ``ConfigError`` naming the first bad entry."""
    # Bounded (size, nesting): a deep document is refused instead of raising RecursionError.
    doc = loads_json(
        data,
        max_size=MAX_COMPONENTS_FILE,
        what="components file",
        error=lambda message: ConfigError(f"{message}; the CLI writes it as a small JSON object"),
    )
    if not isinstance(doc, dict):
        raise ConfigError("components file must be a JSON object")
    version = doc.get("kubernetesVersion")
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise ConfigError(
            f"components file: kubernetesVersion must look like v1.31.1, got {_shown(version)}"
        )
    items = doc.get("components")
    if not isinstance(items, list):
        raise ConfigError("components file: 'components' must be an array")
    parsed: list[Component] = []
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigError(f"components file: components[{position}] is not an object")
        name, url, digest = item.get("name"), item.get("url"), item.get("hash")
        install_path, extract = item.get("installPath", ""), item.get("extract", False)
        if not isinstance(url, str) or not url:
            raise ConfigError(f"components file: components[{position}].url is missing")
        if not isinstance(digest, str) or not _HASH.fullmatch(digest):
            raise ConfigError(
                f"components file: components[{position}].hash must be sha256:<64 hex>, "
                f"got {_shown(digest)}"
            )
        if not isinstance(name, str) or not isinstance(install_path, str):
            raise ConfigError(
                f"components file: components[{position}] name/installPath must be strings"
            )
        if not isinstance(extract, bool):
            raise ConfigError(f"components file: components[{position}].extract must be a bool")
        parsed.append(Component(name, url, digest, install_path, extract))
    return Components(version, tuple(parsed))


def _shown(value: object) -> str:
    """``repr(value)``, shortened: a refusal names what it found without echoing a megabyte."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _read(path: Path, limit: int) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise ConfigError(f"{path} is larger than {limit} bytes")
    return data


@dataclass(frozen=True)
class ClusterFiles:
    """Reads the CA, the control-plane PKI and the components file from disk."""

    ca_cert_file: Path
    pki_dir: Path
    components_file: Path

    def ca_cert_pem(self) -> bytes:
        return _read(self.ca_cert_file, MAX_PKI_FILE)

    def components(self) -> Components:
        return parse_components(_read(self.components_file, MAX_COMPONENTS_FILE))

    def control_plane_files(self) -> tuple[tuple[str, SecretBytes], ...]:
        """Every kubeadm control-plane file present; ``ca.crt``/``ca.key`` are required."""
        files: list[tuple[str, SecretBytes]] = []
        for name in CONTROL_PLANE_FILES:
            path = self.pki_dir / name
            if not path.exists():
                if name in ("ca.crt", "ca.key"):
                    raise ConfigError(f"control-plane file {path} is missing")
                continue
            files.append((name, SecretBytes(_read(path, MAX_PKI_FILE))))
        return tuple(files)
