"""The mini-mode node image: an exact copy of the code a node boots, and its measurements.

An image is a directory::

    constellation/attestation/...    the attestation library    (copied package trees,
    constellation/proto/...          protos + generated modules  no __pycache__)
    constellation/bootstrapper/...   the bootstrapper
    image.json                       image version, Kubernetes version, component hashes,
                                     and the command line the firmware starts

Measured boot (what :mod:`.firmware` extends, and what :func:`expected_pcrs` replays from
zero; every digest is SHA-256):

- PCR 4  ("boot loader / kernel"): the image manifest — one line ``<sha256>  <path>\\n`` per
  file, sorted by path, every file of the image including ``image.json``;
- PCR 9  ("initrd / code"): the manifest of the ``constellation/bootstrapper`` tree alone;
- PCR 11 ("unified kernel image / command line"): the bytes of ``image.json``.

Each is one ``EV_EVENT_TAG`` event (:class:`BootEvent`) whose data is a
``TCG_PCClientTaggedEvent``: a tag naming the measurement, then the SHA-256 of what was
measured and a description. The PCR is extended with the SHA-256 of that whole event data, a
relation the validator recomputes from the log (``eventlog.DATA_BOUND_EVENT_TYPES``), so
neither the description nor the measured hash in the log can be rewritten while the PCR still
replays, and the TCG event log replays to exactly these values. All other PCRs of 0..14 stay
zero and are expected as zero; PCR 15 is the node lock and is expected zero in published
measurements (``join-config`` and init enforce that; ``verify`` substitutes the cluster's
value). Changing any byte of any file changes PCR 4, a change in the bootstrapper also PCR 9, a
change of the configuration PCR 11.

The measurement functions are pure (file contents in, digests out); :func:`read_image` is the
only one that reads the directory, and it refuses symlinks and special files so the measured
content is exactly what Python will import.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from constellation.attestation.eventlog import EV_EVENT_TAG, TaggedEvent
from constellation.attestation.measurements import (
    PCR_NODE_LOCK,
    ImageMeasurements,
    Measurement,
    Measurements,
    VariantMeasurements,
    sign_measurements,
)
from constellation.bootstrapper.atomicfile import PUBLIC_MODE, SECRET_MODE, write_atomic
from constellation.cli.mini.errors import ImageError

IMAGE_CONFIG = "image.json"
IMAGE_PACKAGES = ("attestation", "proto", "bootstrapper")
NAMESPACE = "constellation"
IMAGE_SCHEMA = 1
CSP = "mini"
VARIANT = "qemu-vtpm"
PUBLISHED_REF = "mini"
PUBLISHED_STREAM = "local"
BOOT_COMMAND = ("python", "-m", "constellation.bootstrapper", "--config", "bootstrapper.json")

PCR_MANIFEST = 4
PCR_CODE = 9
PCR_CONFIG = 11
# taggedEventID of each measurement: "CM" (constellation-mini) and the PCR it goes into.
TAG_IMAGE_MANIFEST = 0x434D0000 | PCR_MANIFEST
TAG_BOOTSTRAPPER_CODE = 0x434D0000 | PCR_CODE
TAG_IMAGE_CONFIG = 0x434D0000 | PCR_CONFIG
MEASURED_PCRS = tuple(range(PCR_NODE_LOCK + 1))  # 0..14 from the boot chain, 15 the node lock
ZERO = bytes(32)

MAX_IMAGE_FILES = 5000
MAX_IMAGE_BYTES = 64 << 20
MAX_CONFIG_SIZE = 64 * 1024
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SKIPPED = ("__pycache__",)


@dataclass(frozen=True)
class ImageFile:
    """One file of an image: its POSIX path relative to the image root and its SHA-256."""

    path: str
    sha256: bytes


@dataclass(frozen=True)
class ImageContents:
    """What was read from an image directory: every file's digest and the raw image.json."""

    files: tuple[ImageFile, ...]
    config: bytes


@dataclass(frozen=True)
class ImageConfig:
    """The parsed ``image.json``."""

    version: str
    kubernetes_version: str
    components: Mapping[str, str]

    def to_json(self) -> bytes:
        document = {
            "schema": IMAGE_SCHEMA,
            "version": self.version,
            "kubernetesVersion": self.kubernetes_version,
            "components": dict(sorted(self.components.items())),
            "commandLine": list(BOOT_COMMAND),
        }
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class BootEvent:
    """One measurement the firmware makes, logged as an ``EV_EVENT_TAG`` event.

    ``measured`` is the SHA-256 of what was measured (a manifest, ``image.json``). The event
    data (:attr:`data`) is a ``TCG_PCClientTaggedEvent`` with id ``tag`` whose payload is
    ``measured`` (32 bytes) followed by the UTF-8 ``description``; the PCR is extended by
    :attr:`digest`, the SHA-256 of that whole event data, which is what the TCG PC Client
    profile defines for this event type and what the validator recomputes.
    """

    pcr: int
    tag: int
    measured: bytes
    description: str

    event_type: ClassVar[int] = EV_EVENT_TAG

    def __post_init__(self) -> None:
        if len(self.measured) != len(ZERO):
            raise ImageError(f"a boot event measures a SHA-256 digest, got {len(self.measured)}")

    @property
    def data(self) -> bytes:
        """The event data the log carries (and the PCR is extended with the hash of)."""
        return TaggedEvent(self.tag, self.measured + self.description.encode()).encode()

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.data).digest()


def parse_image_config(data: bytes) -> ImageConfig:
    """Parse ``image.json`` strictly (pure)."""
    if len(data) > MAX_CONFIG_SIZE:
        raise ImageError(f"{IMAGE_CONFIG} is larger than {MAX_CONFIG_SIZE} bytes")
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ImageError(f"{IMAGE_CONFIG} is not valid JSON: {err}") from None
    keys = {"schema", "version", "kubernetesVersion", "components", "commandLine"}
    if not isinstance(document, dict) or set(document) != keys:
        raise ImageError(f"{IMAGE_CONFIG} must be an object with exactly the keys {sorted(keys)}")
    if document["schema"] != IMAGE_SCHEMA:
        raise ImageError(f"{IMAGE_CONFIG}: schema must be {IMAGE_SCHEMA}")
    version = document["version"]
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise ImageError(f"{IMAGE_CONFIG}: version must match {_VERSION.pattern}")
    kubernetes = document["kubernetesVersion"]
    if not isinstance(kubernetes, str) or not re.fullmatch(r"v\d+\.\d+\.\d+", kubernetes):
        raise ImageError(f"{IMAGE_CONFIG}: kubernetesVersion must look like v1.31.1")
    components = document["components"]
    if not isinstance(components, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v)
        for k, v in components.items()
    ):
        raise ImageError(f"{IMAGE_CONFIG}: components must map names to SHA-256 hex digests")
    if document["commandLine"] != list(BOOT_COMMAND):
        raise ImageError(f"{IMAGE_CONFIG}: commandLine must be {list(BOOT_COMMAND)}")
    return ImageConfig(version, kubernetes, dict(components))


def manifest(files: Sequence[ImageFile]) -> bytes:
    """The manifest text of ``files``: ``<sha256 hex>  <path>`` lines sorted by path."""
    return b"".join(
        f"{f.sha256.hex()}  {f.path}\n".encode() for f in sorted(files, key=lambda f: f.path)
    )


def boot_events(contents: ImageContents) -> tuple[BootEvent, ...]:
    """The measurements the firmware makes for an image, in order (pure)."""
    code_prefix = f"{NAMESPACE}/bootstrapper/"
    code = [f for f in contents.files if f.path.startswith(code_prefix)]
    if not code:
        raise ImageError(f"the image holds no {code_prefix} tree")
    full = manifest(contents.files)
    return (
        BootEvent(
            PCR_MANIFEST,
            TAG_IMAGE_MANIFEST,
            hashlib.sha256(full).digest(),
            f"constellation-mini image manifest ({len(contents.files)} files)",
        ),
        BootEvent(
            PCR_CODE,
            TAG_BOOTSTRAPPER_CODE,
            hashlib.sha256(manifest(code)).digest(),
            f"constellation-mini bootstrapper code ({len(code)} files)",
        ),
        BootEvent(
            PCR_CONFIG,
            TAG_IMAGE_CONFIG,
            hashlib.sha256(contents.config).digest(),
            "constellation-mini image.json (image configuration and command line)",
        ),
    )


def replay_events(events: Sequence[BootEvent]) -> dict[int, bytes]:
    """PCR values after extending ``events`` into a fresh SHA-256 bank (pure)."""
    values = dict.fromkeys(MEASURED_PCRS, ZERO)
    for event in events:
        if event.pcr not in values or event.pcr == PCR_NODE_LOCK:
            raise ImageError(f"boot event for PCR {event.pcr} is outside the boot chain (0..14)")
        values[event.pcr] = hashlib.sha256(values[event.pcr] + event.digest).digest()
    return values


def measurements_for(contents: ImageContents) -> Measurements:
    """Expected measurements of an image: PCRs 0..14 as replayed, PCR 15 zero (pure)."""
    values = replay_events(boot_events(contents))
    return Measurements({index: Measurement(value) for index, value in values.items()})


def read_image(image_dir: Path) -> ImageContents:
    """Hash every file of ``image_dir``; refuse symlinks, special files and oversize images."""
    root = Path(image_dir)
    if not root.is_dir():
        raise ImageError(
            f"{root} is not a directory", hint="build one with `constellation mini image build`"
        )
    files: list[ImageFile] = []
    total = 0
    config: bytes | None = None
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED)
        for name in sorted(filenames + [d for d in dirnames if (Path(directory) / d).is_symlink()]):
            path = Path(directory) / name
            relative = PurePosixPath(path.relative_to(root).as_posix())
            mode = path.lstat().st_mode
            if not stat.S_ISREG(mode):
                raise ImageError(
                    f"{relative} in {root} is not a regular file (symlinks are refused: the "
                    "measured bytes must be the bytes that run)"
                )
            if path.suffix == ".pyc":
                continue  # bytecode caches are never part of an image (not copied, not run)
            data = path.read_bytes()
            total += len(data)
            if len(files) >= MAX_IMAGE_FILES or total > MAX_IMAGE_BYTES:
                raise ImageError(f"{root} is too large for a node image")
            files.append(ImageFile(str(relative), hashlib.sha256(data).digest()))
            if str(relative) == IMAGE_CONFIG:
                config = data
    if config is None:
        raise ImageError(
            f"{root} has no {IMAGE_CONFIG}; it is not a node image",
            hint="build one with `constellation mini image build DIR`",
        )
    return ImageContents(tuple(files), config)


def expected_pcrs(image_dir: Path) -> dict[int, bytes]:
    """The PCR values (0..15) the firmware step produces for ``image_dir``."""
    return replay_events(boot_events(read_image(image_dir)))


def image_config(image_dir: Path) -> ImageConfig:
    return parse_image_config(read_image(image_dir).config)


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(f"{NAMESPACE}.{name}")
    if spec is None or not spec.submodule_search_locations:
        raise ImageError(f"the package {NAMESPACE}.{name} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def source_version(sources: Mapping[str, Path] | None = None) -> str:
    """The version of an image built from ``sources``: ``mini-`` + 12 hex of the code digest."""
    digest = hashlib.sha256()
    for name in IMAGE_PACKAGES:
        directory = (sources or {}).get(name) or _package_dir(name)
        for path in sorted(directory.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                digest.update(f"{name}/{path.relative_to(directory).as_posix()}\n".encode())
                digest.update(hashlib.sha256(path.read_bytes()).digest())
    return "mini-" + digest.hexdigest()[:12]


def build_image(
    destination: Path,
    *,
    kubernetes_version: str,
    components: Mapping[str, str],
    version: str | None = None,
    sources: Mapping[str, Path] | None = None,
) -> ImageConfig:
    """Copy the installed node packages (or ``sources``) into ``destination`` + image.json.

    ``destination`` must not exist yet (an image is never built over another one).
    """
    if destination.exists():
        raise ImageError(
            f"{destination} already exists", hint="choose a new directory for the image"
        )
    config = ImageConfig(version or source_version(sources), kubernetes_version, components)
    parse_image_config(config.to_json())  # never write an image.json the reader refuses
    destination.mkdir(parents=True)
    try:
        for name in IMAGE_PACKAGES:
            source = (sources or {}).get(name) or _package_dir(name)
            shutil.copytree(
                source,
                destination / NAMESPACE / name,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                symlinks=False,
            )
        write_atomic(destination / IMAGE_CONFIG, config.to_json(), mode=PUBLIC_MODE)
    except OSError as err:
        shutil.rmtree(destination, ignore_errors=True)
        raise ImageError(f"cannot build the image in {destination}: {err}") from None
    return config


def copy_image(source: Path, destination: Path) -> None:
    """A node's own copy of an image (what its firmware measures and its Python imports)."""
    read_image(source)  # refuse a directory that is not an image before copying it
    try:
        shutil.copytree(source, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    except OSError as err:
        raise ImageError(f"cannot copy the image {source} to {destination}: {err}") from None


# -- publishing -------------------------------------------------------------------------------


def generate_publisher_key(path: Path) -> bytes:
    """Create the workspace's image-publisher key (ECDSA P-256, 0600); return its public PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomic(path, pem, mode=SECRET_MODE)
    return public_pem(key)


def load_publisher_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not a PEM private key"
        raise ImageError(
            f"cannot load the image-publisher key {path}: {reason}",
            hint="pass --key with the key `constellation mini up` generated",
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ImageError(f"{path} is not an ECDSA P-256 key")
    return key


def public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class PublishedMeasurements:
    """A signed measurements file as a publisher ships it: the bytes and the detached signature."""

    data: bytes
    signature: bytes
    image: ImageMeasurements


def publish(
    version: str, measurements: Measurements, key: ec.EllipticCurvePrivateKey
) -> PublishedMeasurements:
    """The signed ``{version, ref, stream, list: [...]}`` document for a mini image (pure)."""
    image = ImageMeasurements(
        version=version,
        ref=PUBLISHED_REF,
        stream=PUBLISHED_STREAM,
        entries=(VariantMeasurements(CSP, VARIANT, measurements.with_pcr15(None)),),
    )
    data = image.to_json()
    return PublishedMeasurements(data, sign_measurements(data, key), image)


def publish_image(image_dir: Path, key: ec.EllipticCurvePrivateKey) -> PublishedMeasurements:
    contents = read_image(image_dir)
    config = parse_image_config(contents.config)
    return publish(config.version, measurements_for(contents), key)


def write_published(published: PublishedMeasurements, path: Path) -> Path:
    """Write the file and ``<file>.sig``; return the signature path."""
    signature_path = path.with_name(path.name + ".sig")
    write_atomic(path, published.data, mode=PUBLIC_MODE)
    write_atomic(signature_path, published.signature + b"\n", mode=PUBLIC_MODE)
    return signature_path


def describe(config: ImageConfig) -> dict[str, Any]:
    return {
        "version": config.version,
        "kubernetesVersion": config.kubernetes_version,
        "components": dict(config.components),
    }
