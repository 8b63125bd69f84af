"""Which boot this is, and on which boot this node last opened its state disk.

A bootstrapper that dies and is restarted by its supervisor on the *same boot* finds its state
disk still open: dm-crypt keeps the mapping (and its key, in the kernel) until the machine
reboots. Such a restart needs no key and no ticket from anyone; it only brings the node's
services back. A reboot loses the mapping, and the node must rejoin (or be recovered).

To tell the two apart the node needs a name for the boot. Linux gives one:
``/proc/sys/kernel/random/boot_id``, a random lower-case UUID drawn at every boot and constant
until the next. (Mini mode's firmware step plays the kernel and writes a fresh one per boot.)
When a run commits (init, join, rejoin or recovery completed: the disk is open with the
cluster's key), the node records the boot ID next to its node state::

    state/disk-open.json   {"version": 1, "bootID": "<boot UUID>", "clusterID": "<base64>"}

Written atomically (0600) like the node state; it holds no secret. A restart compares it with
the current boot ID (:meth:`.node.Node.run` also demands PCR 15's cluster mark: a boot ID is a
file, the node lock is a one-way latch of the TPM that only a reboot resets). Every deviation
(missing file aside) raises :class:`BootIdError`, which the node treats as "not the same boot",
i.e. the rejoin path: a damaged record costs a rejoin, never a wrong restart.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from pathlib import Path

from constellation.bootstrapper.atomicfile import SECRET_MODE, write_atomic
from constellation.bootstrapper.errors import BootstrapperError

DISK_OPEN_FILE = "disk-open.json"
DISK_OPEN_FORMAT_VERSION = 1
CLUSTER_ID_LENGTH = 32
_MAX_BOOT_ID_FILE = 128
_MAX_RECORD_FILE = 4096
_BOOT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_KEYS = frozenset({"version", "bootID", "clusterID"})


class BootIdError(BootstrapperError):
    """The boot ID or the disk-open record is unreadable or malformed."""


def _check_boot_id(value: object, where: str) -> str:
    if not isinstance(value, str) or not _BOOT_ID.fullmatch(value):
        shown = repr(value)[:60]
        raise BootIdError(
            f"{where}: expected a boot ID (a lower-case UUID such as the kernel's "
            f"/proc/sys/kernel/random/boot_id), found {shown}"
        )
    return value


def read_boot_id(path: Path) -> str:
    """The current boot's ID from ``path`` (one UUID, an optional trailing newline)."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_BOOT_ID_FILE + 1)
    except OSError as err:
        raise BootIdError(
            f"cannot read the boot ID from {path}: {err.strerror or err}; check the "
            "bootstrapper's boot_id_path"
        ) from None
    if len(raw) > _MAX_BOOT_ID_FILE:
        raise BootIdError(f"{path}: expected a boot ID, found more than {_MAX_BOOT_ID_FILE} bytes")
    try:
        text = raw.decode("ascii").removesuffix("\n")
    except UnicodeDecodeError:
        raise BootIdError(f"{path}: expected a boot ID, found non-ASCII bytes") from None
    return _check_boot_id(text, str(path))


@dataclass(frozen=True)
class DiskOpenRecord:
    """The boot on which this node last committed (its state disk opened for the cluster)."""

    boot_id: str
    cluster_id: bytes

    def __post_init__(self) -> None:
        _check_boot_id(self.boot_id, "disk-open record: bootID")
        if len(self.cluster_id) != CLUSTER_ID_LENGTH:
            raise BootIdError(
                f"disk-open record: clusterID: expected {CLUSTER_ID_LENGTH} bytes, "
                f"found {len(self.cluster_id)}"
            )

    def to_json(self) -> bytes:
        document = {
            "version": DISK_OPEN_FORMAT_VERSION,
            "bootID": self.boot_id,
            "clusterID": base64.b64encode(self.cluster_id).decode(),
        }
        return (json.dumps(document, indent=2) + "\n").encode()


def parse_disk_open(data: bytes, *, source: str = "disk-open record") -> DiskOpenRecord:
    """Parse a disk-open record strictly; raise :class:`BootIdError` naming the field."""
    if len(data) > _MAX_RECORD_FILE:
        raise BootIdError(f"{source}: corrupt, larger than {_MAX_RECORD_FILE} bytes")
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BootIdError(f"{source}: corrupt, not valid JSON: {err}") from None
    if not isinstance(document, dict) or set(document) != _KEYS:
        found = sorted(document) if isinstance(document, dict) else type(document).__name__
        raise BootIdError(f"{source}: corrupt, expected the keys {sorted(_KEYS)}, found {found}")
    version = document["version"]
    if type(version) is not int or version != DISK_OPEN_FORMAT_VERSION:
        raise BootIdError(
            f"{source}: version: expected {DISK_OPEN_FORMAT_VERSION}, found {version!r}"
        )
    encoded = document["clusterID"]
    if not isinstance(encoded, str):
        raise BootIdError(f"{source}: clusterID: expected a base64 string")
    try:
        cluster_id = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise BootIdError(f"{source}: clusterID: not valid base64") from None
    try:
        return DiskOpenRecord(boot_id=document["bootID"], cluster_id=cluster_id)
    except BootIdError as err:
        raise BootIdError(f"{source}: {err}") from None


def load_disk_open(path: Path) -> DiskOpenRecord | None:
    """The record at ``path``; ``None`` if there is none (no run committed on this disk yet)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_RECORD_FILE + 1)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise BootIdError(
            f"cannot read the disk-open record {path}: {err.strerror or err}"
        ) from None
    return parse_disk_open(data, source=f"disk-open record {path}")


def save_disk_open(path: Path, record: DiskOpenRecord) -> None:
    """Persist ``record`` atomically (0600, like the node state next to it)."""
    write_atomic(path, record.to_json(), mode=SECRET_MODE)
