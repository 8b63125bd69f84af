"""Typed settings of one bootstrapper process, validated once at start-up.

A node's bootstrapper reads one JSON file (written by the node image, or by
``constellation mini up`` for a mini-mode node). Everything the node needs to find its
collaborators is here: where its vTPM is, where its state disk and state directory live, where
the instance metadata comes from, where to install Kubernetes components, and how long the join
client may keep trying. Secrets are never part of this file: the init-secret hash comes from the
instance metadata, everything else from the cluster after attestation. Who the node is (name,
role, IP) is not configured here either: it comes from the instance metadata, like on a cloud.

Example (mini mode; every path is the node's own)::

    {"metadata_path": "node-1/metadata.json", "state_disk_path": "node-1/disk.img",
     "state_dir": "node-1/state", "install_root": "node-1/root",
     "tpm_tcti": "swtpm:path=/abs/node-1/tpm/sock", "init_port": 9001,
     "join_measurements_path": "measurements.json", "event_log_path": "node-1/eventlog.bin",
     "ak_certificate_path": "node-1/ak-cert.der", "platform_roots_path": "platform-roots.pem",
     "join_retry": {"max_attempts": 120, "total_timeout_s": 900}}
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from constellation.attestation.boundedparse import loads_json
from constellation.bootstrapper.errors import BootstrapperError

DEFAULT_INIT_PORT = 9000
# Linux names each boot with a random UUID here; it changes on every reboot, never otherwise.
DEFAULT_BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


class ConfigError(BootstrapperError):
    """The bootstrapper's configuration file is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds of the join client's retry loop: exponential backoff with full jitter.

    Attempt ``n`` (0-based) waits a random time in ``[0, min(max_delay, initial * 2**n)]``;
    the loop gives up after ``max_attempts`` attempts or ``total_timeout_s`` seconds, whichever
    comes first. Both bounds are mandatory: a node never retries forever.
    """

    initial_delay_s: float = 0.5
    max_delay_s: float = 10.0
    max_attempts: int = 60
    total_timeout_s: float = 600.0
    rpc_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_delay_s <= self.max_delay_s:
            raise ConfigError("retry: need 0 < initial_delay_s <= max_delay_s")
        if self.max_attempts < 1 or self.total_timeout_s <= 0 or self.rpc_timeout_s <= 0:
            raise ConfigError("retry: max_attempts, total_timeout_s, rpc_timeout_s must be > 0")

    def delay_cap(self, attempt: int) -> float:
        """Upper bound of the wait before attempt ``attempt + 1``."""
        return float(min(self.max_delay_s, self.initial_delay_s * 2.0 ** min(attempt, 32)))


REJOIN_RETRY = RetryPolicy(
    initial_delay_s=0.5, max_delay_s=4.0, max_attempts=5, total_timeout_s=30.0, rpc_timeout_s=15.0
)


@dataclass(frozen=True)
class BootstrapperConfig:
    """Validated settings; construct with :func:`load_config` or directly in tests."""

    metadata_path: Path
    state_disk_path: Path
    state_dir: Path
    install_root: Path
    tpm_tcti: str
    attestation_variant: str = "qemu-vtpm"
    init_host: str = "127.0.0.1"
    init_port: int = DEFAULT_INIT_PORT
    # Expected measurements of the JoinService's node (mini mode: written by the CLI).
    join_measurements_path: Path | None = None
    # TCG event log the node's "firmware" wrote; attached to every attestation.
    event_log_path: Path | None = None
    # The platform's certificate for the vTPM's attestation key (DER), attached to every
    # attestation; a cloud keeps it in a TPM NV index, mini mode writes it next to the node.
    ak_certificate_path: Path | None = None
    # PEM root CA certificate(s) of the platform: the JoinService's AK must chain to one.
    platform_roots_path: Path | None = None
    join_retry: RetryPolicy = field(default_factory=RetryPolicy)
    # A node that runs the control plane tries to rejoin within these (short) bounds, then
    # waits for `constellation recover` (after a full-cluster shutdown nobody answers).
    rejoin_retry: RetryPolicy = field(default_factory=lambda: REJOIN_RETRY)
    component_http_timeout_s: float = 30.0
    component_total_timeout_s: float = 600.0
    # Directories local (file://) component sources must lie in; None: the installer's
    # defaults (the node image's artifact directory and the Kubernetes component cache).
    component_source_dirs: tuple[Path, ...] | None = None
    # Tests only: pbkdf2 with 1000 iterations for LUKS keyslots instead of argon2id.
    fast_luks_pbkdf: bool = False
    control_plane_dir: Path | None = None
    # Where this boot's ID is read: the kernel's on a real node, a file the firmware step
    # writes per boot in mini mode. It tells a same-boot restart from a reboot (:mod:`.bootid`).
    boot_id_path: Path = DEFAULT_BOOT_ID_PATH

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.init_host)
        except ValueError:
            raise ConfigError(f"init_host {self.init_host!r} is not an IP address") from None
        if not 0 < self.init_port < 65536:
            raise ConfigError(f"init_port must be 1..65535, got {self.init_port}")
        if not self.tpm_tcti:
            raise ConfigError("tpm_tcti must name the node's (v)TPM")
        for name in _POSITIVE_FIELDS:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0")

    @property
    def node_state_path(self) -> Path:
        return self.state_dir / "node-state.json"

    @property
    def kubelet_dir(self) -> Path:
        return self.state_dir / "kubelet"

    @property
    def control_plane_root(self) -> Path:
        return self.control_plane_dir or self.state_dir / "control-plane"


_PATH_FIELDS = (
    "metadata_path",
    "state_disk_path",
    "state_dir",
    "install_root",
    "join_measurements_path",
    "event_log_path",
    "ak_certificate_path",
    "platform_roots_path",
    "control_plane_dir",
    "boot_id_path",
)
# Paths that have no "not configured" meaning: JSON null is refused for them.
_NON_NULL_PATHS = frozenset(
    {"metadata_path", "state_disk_path", "state_dir", "install_root", "boot_id_path"}
)
_POSITIVE_FIELDS = ("component_http_timeout_s", "component_total_timeout_s")


def config_from_mapping(data: dict[str, Any]) -> BootstrapperConfig:
    """Build a config from parsed JSON; unknown keys are refused (typos must not pass)."""
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a JSON object")
    known = set(BootstrapperConfig.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown configuration keys: {', '.join(unknown)}")
    values: dict[str, Any] = dict(data)
    for key in _PATH_FIELDS:
        if key not in values:
            continue
        value = values[key]
        if value is None and key not in _NON_NULL_PATHS:
            continue
        if not isinstance(value, str) or not value:
            raise ConfigError(
                f"{key} must be a non-empty path string, got {type(value).__name__} "
                f"{str(value)[:40]!r}; write it as a JSON string"
            )
        values[key] = Path(value)
    dirs = values.get("component_source_dirs")
    if dirs is not None:
        if not isinstance(dirs, list) or not all(isinstance(d, str) and d for d in dirs):
            raise ConfigError("component_source_dirs must be a list of directory paths")
        values["component_source_dirs"] = tuple(Path(d) for d in dirs)
    for key in ("join_retry", "rejoin_retry"):
        if key not in values:
            continue
        retry = values[key]
        if not isinstance(retry, dict):
            raise ConfigError(f"{key} must be an object")
        try:
            values[key] = RetryPolicy(**retry)
        except TypeError as exc:
            raise ConfigError(f"{key}: {exc}") from None
    try:
        return BootstrapperConfig(**values)
    except TypeError as exc:
        raise ConfigError(f"configuration: {exc}") from None


def load_config(path: Path) -> BootstrapperConfig:
    """Read and validate the configuration file."""
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc.strerror or exc}") from None
    data = loads_json(raw, max_size=1 << 20, error=ConfigError, what=f"configuration {path}")
    return config_from_mapping(data)
