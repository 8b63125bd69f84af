from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from constellation.bootstrapper import statedisk
from constellation.bootstrapper.errors import (
    CryptsetupMissingError,
    StateDiskError,
    StateDiskKeyError,
)
from constellation.bootstrapper.statedisk import FAST_PBKDF2, DiskKey, StateDisk

pytestmark = pytest.mark.skipif(
    shutil.which("cryptsetup") is None, reason="needs the cryptsetup binary (cryptsetup-bin)"
)

# LUKS2's default header (metadata + keyslots area) takes 16 MiB; leave room for data.
DISK_SIZE = 20 * 1024 * 1024


@pytest.fixture
def disk_file(tmp_path: Path) -> Path:
    path = tmp_path / "state.img"
    with path.open("wb") as handle:
        handle.truncate(DISK_SIZE)
    return path


@pytest.fixture
def disk(disk_file: Path) -> StateDisk:
    return StateDisk(disk_file, pbkdf=FAST_PBKDF2)


def _disk_key() -> DiskKey:
    # NUL and newline inside the key prove it travels as raw bytes, not as a text line.
    return DiskKey(b"\x00\n" + secrets.token_bytes(30))


def test_format_reads_uuid_and_accepts_initial_passphrase(disk: StateDisk) -> None:
    assert not disk.is_luks()
    initial = disk.format()
    assert disk.is_luks()
    assert len(initial) == 32
    uuid = disk.uuid()
    assert uuid == uuid.lower()
    assert len(uuid) == 36
    disk.check_key(initial)
    dump = disk.dump()
    assert "Version:       \t2" in dump
    assert uuid in dump
    assert "pbkdf2" in dump


def test_rekey_to_disk_key_replaces_the_initial_passphrase(disk: StateDisk) -> None:
    initial = disk.format()
    key = _disk_key()
    disk.rekey(initial, key)
    disk.check_key(key)
    assert not disk.key_matches(initial)


def test_wrong_key_is_rejected(disk: StateDisk) -> None:
    initial = disk.format()
    key = _disk_key()
    disk.rekey(initial, key)
    almost = DiskKey(key.reveal()[:-1] + bytes([key.reveal()[-1] ^ 1]))
    with pytest.raises(StateDiskKeyError, match="does not open any keyslot"):
        disk.check_key(almost)
    # Only the part after the newline differs: a line-oriented reader would accept it.
    truncated_equal = DiskKey(key.reveal()[:2] + secrets.token_bytes(30))
    assert not disk.key_matches(truncated_equal)


def test_rekey_with_wrong_old_key_fails_and_header_stays_usable(disk: StateDisk) -> None:
    initial = disk.format()
    uuid = disk.uuid()
    new = _disk_key()
    with pytest.raises(StateDiskKeyError, match="header was left unchanged"):
        disk.rekey(DiskKey(secrets.token_bytes(32)), new)
    disk.check_key(initial)
    assert not disk.key_matches(new)
    assert disk.uuid() == uuid
    disk.rekey(initial, new)
    disk.check_key(new)


def test_refuses_to_reformat_an_existing_volume(disk: StateDisk) -> None:
    initial = disk.format()
    with pytest.raises(StateDiskError, match="refusing to reformat"):
        disk.format()
    disk.check_key(initial)


def test_rekey_rejects_a_key_of_wrong_length(disk: StateDisk) -> None:
    initial = disk.format()
    with pytest.raises(StateDiskError, match="must be 32 bytes"):
        disk.rekey(initial, DiskKey(b"short"))
    disk.check_key(initial)


def test_operations_on_a_non_luks_file_are_typed_errors(disk: StateDisk) -> None:
    with pytest.raises(StateDiskError, match="cannot read the LUKS UUID"):
        disk.uuid()
    with pytest.raises(StateDiskError):
        disk.check_key(_disk_key())


def test_keys_never_appear_in_the_command_line(
    disk: StateDisk, monkeypatch: pytest.MonkeyPatch
) -> None:
    argvs: list[list[str]] = []
    real_run = subprocess.run

    def recording_run(args: list[str], **kwargs: Any) -> Any:
        argvs.append(list(args))
        return real_run(args, **kwargs)

    monkeypatch.setattr(statedisk.subprocess, "run", recording_run)
    initial = disk.format()
    key = _disk_key()
    disk.rekey(initial, key)
    disk.check_key(key)
    command_lines = "\x00".join(" ".join(argv) for argv in argvs).encode("latin-1")
    for secret in (initial.reveal(), key.reveal()):
        assert secret not in command_lines
        assert secret.hex().encode() not in command_lines
    assert any("luksAddKey" in argv for argv in argvs)
    assert any("luksKillSlot" in argv for argv in argvs)


def test_rekey_adds_the_new_key_before_it_wipes_the_old_slot(disk: StateDisk) -> None:
    """At each crash point of the rekey at least one of the two keys opens the disk."""
    initial = disk.format()
    key = _disk_key()
    seen: dict[str, tuple[bool, bool, list[int]]] = {}

    def at(point: str) -> None:
        seen[point] = (disk.key_matches(initial), disk.key_matches(key), disk.keyslots())

    disk.rekey(initial, key, on_step=at)
    assert seen["rekey.add"] == (True, True, [0, 1])
    assert seen["rekey.kill"] == (False, True, [1])


def test_an_interrupted_rekey_is_completed_with_the_new_key_alone(disk: StateDisk) -> None:
    initial = disk.format()
    key = _disk_key()

    class Crash(Exception):
        pass

    def crash(point: str) -> None:
        raise Crash(point)

    with pytest.raises(Crash):
        disk.rekey(initial, key, on_step=crash)  # dies after the add, before the wipe
    assert disk.keyslots() == [0, 1]
    disk.finish_rekey(key)
    assert disk.keyslots() == [1]
    assert not disk.key_matches(initial)
    assert disk.key_matches(key)


def test_finishing_a_rekey_with_a_key_the_disk_never_got_is_refused(disk: StateDisk) -> None:
    initial = disk.format()
    with pytest.raises(StateDiskKeyError, match="does not open any keyslot"):
        disk.finish_rekey(_disk_key())
    assert disk.keyslots() == [0]  # nothing was wiped
    assert disk.key_matches(initial)


def test_format_takes_the_uuid_it_is_given_and_replaces_only_when_told(disk: StateDisk) -> None:
    uuid = "0b0e0c0d-1111-4222-8333-444455556666"
    disk.format(uuid=uuid)
    assert disk.uuid() == uuid
    with pytest.raises(StateDiskError, match="refusing to reformat"):
        disk.format(uuid=uuid)
    fresh = disk.format(uuid=uuid, replace=True)
    assert disk.uuid() == uuid
    assert disk.keyslots() == [0]
    assert disk.key_matches(fresh)
    with pytest.raises(StateDiskError, match="lower-case UUID"):
        disk.format(uuid="not-a-uuid", replace=True)


def test_errors_do_not_contain_keys(disk: StateDisk) -> None:
    initial = disk.format()
    wrong = DiskKey(secrets.token_bytes(32))
    with pytest.raises(StateDiskKeyError) as info:
        disk.rekey(wrong, _disk_key())
    assert wrong.reveal().hex() not in str(info.value)
    assert initial.reveal().hex() not in str(info.value)


def test_disk_key_repr_is_redacted() -> None:
    raw = b"A" * 32
    key = DiskKey(raw)
    assert "AAAA" not in repr(key)
    assert "AAAA" not in str(key)
    assert "redacted" in repr(key)
    with pytest.raises(StateDiskError):
        DiskKey(b"")


def test_missing_binary_is_a_typed_error(disk_file: Path) -> None:
    with pytest.raises(CryptsetupMissingError, match="cryptsetup-bin"):
        StateDisk(disk_file, cryptsetup="cryptsetup-does-not-exist")


@pytest.mark.slow
def test_default_pbkdf_is_argon2id(disk_file: Path) -> None:
    disk = StateDisk(disk_file)
    initial = disk.format()
    assert "argon2id" in disk.dump()
    disk.check_key(initial)


def test_rekey_to_the_key_the_cluster_derives_for_this_uuid(disk: StateDisk) -> None:
    """DESIGN.md §3: disk key = derive_key(master_key, master_salt, "key-" + lowercase(u), 32)."""
    from constellation.attestation.kdf import derive_key

    master_key, master_salt = secrets.token_bytes(32), secrets.token_bytes(32)
    initial = disk.format()
    uuid = disk.uuid()
    key = DiskKey(derive_key(master_key, master_salt, "key-" + uuid, 32))
    disk.rekey(initial, key)
    # A reboot: the node gets the same key again from the cluster for the same UUID.
    disk.check_key(DiskKey(derive_key(master_key, master_salt, "key-" + disk.uuid(), 32)))
    other_uuid = DiskKey(derive_key(master_key, master_salt, "key-" + uuid.upper(), 32))
    assert not disk.key_matches(other_uuid)
