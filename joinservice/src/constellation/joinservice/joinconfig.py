"""The ``join-config``: what a joining node must prove, as mounted files, watched for changes.

The CLI writes the ``join-config`` ConfigMap (DESIGN.md §2 step 4, §8 step 8) and Kubernetes
mounts it into the JoinService as a directory with one file per key:

- ``attestationVariant``: the variant name, e.g. ``qemu-vtpm`` (text, surrounding whitespace
  ignored);
- ``measurements``: the expected measurements as JSON (``{"4": {"expected": "<hex>",
  "warnOnly": false}, ...}``); PCR 15 is always enforced as zero for a join, whatever the file
  says, because a node whose PCR 15 is set has already committed to a cluster; a file that
  enforces nothing else is refused (it would admit any machine);
- ``measurementSalt``: the cluster's 32-byte measurement salt, raw (``binaryData``). It may
  instead come from a separate file (``salt_file``), e.g. when it is mounted from a Secret;
- ``platformRoots``: PEM CA certificate(s) of the platform that certifies nodes' attestation
  keys (the AK certificate names the instance and its role). Required for ``qemu-vtpm``,
  whose AK has no other root; optional (absent file = none) for variants whose hardware report
  roots the AK.

``parse_join_config`` is pure (bytes in, ``JoinConfig`` out or ``JoinConfigError``).
``JoinConfigWatcher`` polls the directory at a bounded interval and compares a content digest
rather than modification times: Kubernetes updates a ConfigMap mount by swapping the ``..data``
symlink, which leaves the visible paths' own mtimes meaningless. On a change it calls the
``build`` function (which turns the config into validators); if parsing or building fails the
previous build stays in force and the reason is logged, so a bad upgrade never locks nodes out
and never needs a restart to recover from.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Generic, TypeVar

import structlog
from cryptography import x509

from constellation.attestation.errors import ConstellationError
from constellation.attestation.identity.errors import IdentityError
from constellation.attestation.identity.verify import load_platform_roots
from constellation.attestation.measurements import (
    PCR_NODE_LOCK,
    Measurements,
    MeasurementsError,
)
from constellation.attestation.vtpm import QEMU_VTPM
from constellation.joinservice.errors import JoinConfigError

VARIANT_FILE: Final = "attestationVariant"
MEASUREMENTS_FILE: Final = "measurements"
SALT_FILE: Final = "measurementSalt"
PLATFORM_ROOTS_FILE: Final = "platformRoots"
#: Variants whose attestation key is rooted only by a platform AK certificate.
NEEDS_PLATFORM_ROOTS: Final = frozenset({QEMU_VTPM})
MEASUREMENT_SALT_LENGTH: Final = 32
# A join-config is a few kilobytes; anything far larger is not one.
MAX_FILE_SIZE: Final = 1 << 20

log = structlog.get_logger("constellation.joinservice.joinconfig")

T = TypeVar("T")


@dataclass(frozen=True)
class JoinConfig:
    """A parsed ``join-config``. ``measurements`` already enforce PCR 15 = zero."""

    variant: str
    measurements: Measurements
    measurement_salt: bytes
    digest: str
    platform_roots: tuple[x509.Certificate, ...] = ()

    def __repr__(self) -> str:
        return f"JoinConfig(variant={self.variant!r}, digest={self.digest[:12]})"


def config_digest(
    variant: bytes, measurements: bytes, salt: bytes, platform_roots: bytes = b""
) -> str:
    """Content digest of the files, length-prefixed so boundaries cannot shift."""
    hasher = hashlib.sha256()
    for part in (variant, measurements, salt, platform_roots):
        hasher.update(len(part).to_bytes(8, "big"))
        hasher.update(part)
    return hasher.hexdigest()


def parse_join_config(
    variant: bytes, measurements: bytes, salt: bytes, platform_roots: bytes = b""
) -> JoinConfig:
    """Parse the files' contents; raise ``JoinConfigError`` naming every problem."""
    problems: list[str] = []
    name = ""
    try:
        name = variant.decode("ascii").strip()
    except UnicodeDecodeError:
        problems.append(f"{VARIANT_FILE} is not ASCII text")
    else:
        if not name:
            problems.append(f"{VARIANT_FILE} is empty")
    parsed: Measurements | None = None
    try:
        parsed = Measurements.from_json(measurements).with_pcr15(None)
    except MeasurementsError as exc:
        problems.append(f"{MEASUREMENTS_FILE}: {exc}")
    else:
        enforced = [i for i, m in parsed.items() if not m.warn_only and i != PCR_NODE_LOCK]
        if not enforced:
            problems.append(
                f"{MEASUREMENTS_FILE} enforce no PCR besides 15, so any machine with a fresh "
                "TPM would pass; publish the image's measurements (e.g. PCRs 4, 9, 11)"
            )
    if len(salt) != MEASUREMENT_SALT_LENGTH:
        problems.append(
            f"{SALT_FILE} must be {MEASUREMENT_SALT_LENGTH} raw bytes, got {len(salt)} bytes"
        )
    roots: tuple[x509.Certificate, ...] = ()
    if platform_roots.strip():
        try:
            roots = load_platform_roots(platform_roots)
        except IdentityError as exc:
            problems.append(f"{PLATFORM_ROOTS_FILE}: {exc}")
    elif name in NEEDS_PLATFORM_ROOTS:
        problems.append(
            f"{PLATFORM_ROOTS_FILE} is missing: {name} nodes prove who they are only by an AK "
            "certificate of their platform, so the platform's root CA must be configured"
        )
    if problems or parsed is None:
        raise JoinConfigError("invalid join-config: " + "; ".join(problems))
    digest = config_digest(variant, measurements, salt, platform_roots)
    return JoinConfig(name, parsed, bytes(salt), digest, roots)


def _read_bounded(path: Path) -> bytes:
    with path.open("rb") as handle:
        data = handle.read(MAX_FILE_SIZE + 1)
    if len(data) > MAX_FILE_SIZE:
        raise JoinConfigError(f"{path.name} is larger than {MAX_FILE_SIZE} bytes")
    return data


def read_join_config_files(
    directory: Path, salt_file: Path | None = None
) -> tuple[bytes, bytes, bytes, bytes]:
    """Read the files (following the ConfigMap mount's symlinks); absent roots read as empty."""
    contents: list[bytes] = []
    paths = (
        directory / VARIANT_FILE,
        directory / MEASUREMENTS_FILE,
        salt_file if salt_file is not None else directory / SALT_FILE,
    )
    for path in paths:
        try:
            contents.append(_read_bounded(path))
        except OSError as exc:
            raise JoinConfigError(f"cannot read join-config file {path}: {exc.strerror}") from None
    roots_path = directory / PLATFORM_ROOTS_FILE
    try:
        roots = _read_bounded(roots_path)
    except FileNotFoundError:
        roots = b""
    except OSError as exc:
        raise JoinConfigError(
            f"cannot read join-config file {roots_path}: {exc.strerror}"
        ) from None
    return contents[0], contents[1], contents[2], roots


def load_join_config(directory: Path, salt_file: Path | None = None) -> JoinConfig:
    return parse_join_config(*read_join_config_files(directory, salt_file))


@dataclass(frozen=True)
class Loaded(Generic[T]):
    """A join-config together with what was built from it."""

    config: JoinConfig
    built: T


class JoinConfigWatcher(Generic[T]):
    """Keeps ``current`` in step with the mounted ``join-config``.

    ``build`` turns a ``JoinConfig`` into whatever the service needs (validators); it may raise
    any ``ConstellationError`` (e.g. an unknown variant), which rejects that config. The first
    load happens in the constructor and must succeed; later failures keep the previous value.
    """

    def __init__(
        self,
        directory: Path,
        build: Callable[[JoinConfig], T],
        *,
        interval: float,
        salt_file: Path | None = None,
        on_change: Callable[[Loaded[T]], None] | None = None,
    ) -> None:
        self._directory = directory
        self._salt_file = salt_file
        self._build = build
        self._interval = interval
        self._on_change = on_change
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_seen = ""
        config = load_join_config(directory, salt_file)
        self._current = Loaded(config, build(config))
        self._last_seen = config.digest
        log.info("joinconfig.loaded", variant=config.variant, digest=config.digest)

    def on_change(self, callback: Callable[[Loaded[T]], None]) -> None:
        """Call ``callback`` after every config that was taken into use (not the first load)."""
        self._on_change = callback

    @property
    def current(self) -> Loaded[T]:
        with self._lock:
            return self._current

    def poll(self) -> bool:
        """Check the mount once; return True if a new config was taken into use."""
        try:
            raw = read_join_config_files(self._directory, self._salt_file)
        except JoinConfigError as exc:
            # A half-swapped mount or a deleted ConfigMap: keep serving what we have.
            if self._last_seen != "unreadable":
                log.warning("joinconfig.rejected", reason=str(exc), kept=self.current.config.digest)
            self._last_seen = "unreadable"
            return False
        digest = config_digest(*raw)
        if digest == self._last_seen:
            return False
        self._last_seen = digest
        if digest == self.current.config.digest:
            log.info("joinconfig.restored", digest=digest)
            return False
        try:
            config = parse_join_config(*raw)
            built = self._build(config)
        except ConstellationError as exc:
            log.warning(
                "joinconfig.rejected",
                reason=str(exc),
                rejected=digest,
                kept=self.current.config.digest,
            )
            return False
        loaded = Loaded(config, built)
        with self._lock:
            previous = self._current.config
            self._current = loaded
        log.info(
            "joinconfig.reloaded",
            variant=config.variant,
            digest=config.digest,
            previous=previous.digest,
        )
        if self._on_change is not None:
            self._on_change(loaded)
        return True

    def start(self) -> None:
        """Poll in a daemon thread until ``stop``."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="joinconfig-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.poll()
            except Exception:  # the watcher must outlive any surprise in one poll
                log.exception("joinconfig.poll_failed")
