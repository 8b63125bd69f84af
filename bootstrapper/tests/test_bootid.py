"""The boot ID and the disk-open record: read strictly, every deviation a typed refusal."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from constellation.bootstrapper.bootid import (
    BootIdError,
    DiskOpenRecord,
    load_disk_open,
    parse_disk_open,
    read_boot_id,
    save_disk_open,
)

BOOT = "0f2c1e9a-6b3d-4c1e-9f7a-2b8d4e6c1a3f"
CLUSTER = b"\x11" * 32


def test_the_kernels_boot_id_reads_as_a_boot_id() -> None:
    kernel = Path("/proc/sys/kernel/random/boot_id")
    if not kernel.exists():
        pytest.skip("no /proc/sys/kernel/random/boot_id on this system")
    assert read_boot_id(kernel) == read_boot_id(kernel)


def test_a_boot_id_file_with_a_newline_reads(tmp_path: Path) -> None:
    path = tmp_path / "boot_id"
    path.write_text(BOOT + "\n")
    assert read_boot_id(path) == BOOT


@pytest.mark.parametrize(
    "content",
    [b"", b"\n", b"not-a-uuid\n", BOOT.upper().encode(), b"\xff" * 36, (BOOT + "0").encode()],
)
def test_a_malformed_boot_id_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "boot_id"
    path.write_bytes(content)
    with pytest.raises(BootIdError, match="boot ID"):
        read_boot_id(path)


def test_a_missing_or_huge_boot_id_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BootIdError, match="cannot read"):
        read_boot_id(tmp_path / "missing")
    huge = tmp_path / "huge"
    huge.write_bytes(b"a" * (1 << 20))
    with pytest.raises(BootIdError, match="boot ID"):
        read_boot_id(huge)


def test_the_record_round_trips_and_holds_no_secret(tmp_path: Path) -> None:
    path = tmp_path / "disk-open.json"
    record = DiskOpenRecord(boot_id=BOOT, cluster_id=CLUSTER)
    save_disk_open(path, record)
    assert load_disk_open(path) == record
    assert set(json.loads(path.read_bytes())) == {"version", "bootID", "clusterID"}
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_a_missing_record_is_none(tmp_path: Path) -> None:
    assert load_disk_open(tmp_path / "disk-open.json") is None


@pytest.mark.parametrize(
    "document",
    [
        b"{",
        b"[]",
        b"\xff",
        json.dumps({"version": 1, "bootID": BOOT}).encode(),
        json.dumps({"version": 2, "bootID": BOOT, "clusterID": "ERER"}).encode(),
        json.dumps({"version": True, "bootID": BOOT, "clusterID": "ERER"}).encode(),
        json.dumps({"version": 1, "bootID": 5, "clusterID": "ERER"}).encode(),
        json.dumps({"version": 1, "bootID": "x", "clusterID": "ERER"}).encode(),
        json.dumps({"version": 1, "bootID": BOOT, "clusterID": "!!"}).encode(),
        json.dumps({"version": 1, "bootID": BOOT, "clusterID": 7}).encode(),
        json.dumps({"version": 1, "bootID": BOOT, "clusterID": "ERER"}).encode(),  # 3 bytes
        json.dumps({"version": 1, "bootID": BOOT, "clusterID": "", "extra": 1}).encode(),
        b"1" * 100_000,
    ],
)
def test_a_corrupt_record_is_refused(document: bytes) -> None:
    with pytest.raises(BootIdError, match="disk-open record"):
        parse_disk_open(document)


def test_a_record_is_validated_on_construction() -> None:
    with pytest.raises(BootIdError):
        DiskOpenRecord(boot_id="x", cluster_id=CLUSTER)
    with pytest.raises(BootIdError):
        DiskOpenRecord(boot_id=BOOT, cluster_id=b"short")
