"""The join-config parser and watcher: strict parsing, reload without restart, bad changes kept
out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from constellation.attestation.errors import ConstellationError
from constellation.attestation.identity.ca import PlatformCA
from constellation.attestation.measurements import SHA256_ZERO
from constellation.attestation.testing.platform import cached_platform_ca
from constellation.joinservice.errors import JoinConfigError
from constellation.joinservice.joinconfig import (
    MEASUREMENTS_FILE,
    PLATFORM_ROOTS_FILE,
    SALT_FILE,
    VARIANT_FILE,
    JoinConfig,
    JoinConfigWatcher,
    parse_join_config,
)

from .conftest import write_mount

SALT = bytes(range(32))
ROOTS = cached_platform_ca().cert_pem


def measurements_json(pcr4: str = "aa" * 32, pcr15: str | None = None) -> bytes:
    doc: dict[str, object] = {"4": {"expected": pcr4, "warnOnly": False}}
    if pcr15 is not None:
        doc["15"] = {"expected": pcr15, "warnOnly": True}
    return json.dumps(doc).encode()


def good_files(pcr4: str = "aa" * 32) -> dict[str, bytes]:
    return {
        VARIANT_FILE: b"qemu-vtpm\n",
        MEASUREMENTS_FILE: measurements_json(pcr4),
        SALT_FILE: SALT,
        PLATFORM_ROOTS_FILE: ROOTS,
    }


def test_parse_forces_pcr15_zero_and_enforced() -> None:
    config = parse_join_config(b"qemu-vtpm\n", measurements_json(pcr15="bb" * 32), SALT, ROOTS)
    assert config.variant == "qemu-vtpm"
    assert config.platform_roots == (cached_platform_ca().certificate,)
    assert config.measurement_salt == SALT
    assert config.measurements[15].expected == SHA256_ZERO
    assert not config.measurements[15].warn_only
    assert config.measurements[4].expected == bytes.fromhex("aa" * 32)


def test_parse_reports_every_problem() -> None:
    with pytest.raises(JoinConfigError) as info:
        parse_join_config(b"  \n", b'{"4": {"expected": "zz"}}', b"short")
    message = str(info.value)
    assert VARIANT_FILE in message
    assert MEASUREMENTS_FILE in message
    assert SALT_FILE in message
    assert isinstance(info.value, ConstellationError)


@pytest.mark.parametrize(
    ("variant", "measurements", "salt", "fragment"),
    [
        (b"\xff", measurements_json(), SALT, "not ASCII"),
        (b"qemu-vtpm", b"not json", SALT, "JSON"),
        (b"qemu-vtpm", b'{"24": "' + b"aa" * 32 + b'"}', SALT, "out of range"),
        (b"qemu-vtpm", measurements_json(pcr4="aa" * 31), SALT, "31 bytes"),
        (b"qemu-vtpm", measurements_json(), SALT + b"x", "33 bytes"),
        (b"qemu-vtpm", b"{}", SALT, "enforce no PCR besides 15"),
        (b"qemu-vtpm", b'{"15": "' + b"00" * 32 + b'"}', SALT, "enforce no PCR besides 15"),
        (
            b"qemu-vtpm",
            b'{"4": {"expected": "' + b"aa" * 32 + b'", "warnOnly": true}}',
            SALT,
            "enforce no PCR besides 15",
        ),
    ],
)
def test_parse_rejects(variant: bytes, measurements: bytes, salt: bytes, fragment: str) -> None:
    with pytest.raises(JoinConfigError, match=fragment):
        parse_join_config(variant, measurements, salt, ROOTS)


@pytest.mark.parametrize(
    ("roots", "fragment"),
    [
        (b"", "platformRoots is missing"),
        (b"not a certificate", "platformRoots"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "platformRoots"),
    ],
)
def test_qemu_vtpm_needs_usable_platform_roots(roots: bytes, fragment: str) -> None:
    """Without a platform root no qemu-vtpm AK can be rooted: refuse the config, not every node."""
    with pytest.raises(JoinConfigError, match=fragment):
        parse_join_config(b"qemu-vtpm", measurements_json(), SALT, roots)


def test_variants_rooted_by_their_report_need_no_platform_roots() -> None:
    assert parse_join_config(b"aws-sev-snp", measurements_json(), SALT).platform_roots == ()


def test_new_platform_roots_are_a_new_config() -> None:
    other = PlatformCA.generate().cert_pem
    first = parse_join_config(b"qemu-vtpm", measurements_json(), SALT, ROOTS)
    second = parse_join_config(b"qemu-vtpm", measurements_json(), SALT, other)
    assert first.digest != second.digest


def test_missing_file_is_a_join_config_error(tmp_path: Path) -> None:
    (tmp_path / VARIANT_FILE).write_bytes(b"qemu-vtpm")
    with pytest.raises(JoinConfigError, match=MEASUREMENTS_FILE):
        JoinConfigWatcher(tmp_path, lambda c: c, interval=1)


class Builds:
    """A build function that records what it built and refuses variant names it is told to."""

    def __init__(self) -> None:
        self.built: list[JoinConfig] = []
        self.refuse: set[str] = set()

    def __call__(self, config: JoinConfig) -> str:
        if config.variant in self.refuse:
            raise JoinConfigError(f"unknown attestation variant {config.variant!r}")
        self.built.append(config)
        return config.measurements[4].expected.hex()


def test_watcher_reloads_on_symlink_swap(tmp_path: Path) -> None:
    write_mount(tmp_path, "1", good_files("aa" * 32))
    builds = Builds()
    watcher = JoinConfigWatcher(tmp_path, builds, interval=1)
    assert watcher.current.built == "aa" * 32
    assert watcher.poll() is False  # unchanged

    write_mount(tmp_path, "2", good_files("bb" * 32))
    assert watcher.poll() is True
    assert watcher.current.built == "bb" * 32
    assert len(builds.built) == 2


def test_watcher_keeps_old_on_malformed_change(tmp_path: Path) -> None:
    write_mount(tmp_path, "1", good_files("aa" * 32))
    watcher = JoinConfigWatcher(tmp_path, Builds(), interval=1)
    bad = good_files()
    bad[MEASUREMENTS_FILE] = b'{"4": {"expected": "not-hex"}}'
    write_mount(tmp_path, "2", bad)
    assert watcher.poll() is False
    assert watcher.current.built == "aa" * 32
    # A later good change is still picked up.
    write_mount(tmp_path, "3", good_files("cc" * 32))
    assert watcher.poll() is True
    assert watcher.current.built == "cc" * 32


def test_watcher_keeps_old_when_build_fails(tmp_path: Path) -> None:
    write_mount(tmp_path, "1", good_files("aa" * 32))
    builds = Builds()
    watcher = JoinConfigWatcher(tmp_path, builds, interval=1)
    builds.refuse.add("no-such-variant")
    files = good_files("bb" * 32)
    files[VARIANT_FILE] = b"no-such-variant"
    write_mount(tmp_path, "2", files)
    assert watcher.poll() is False
    assert watcher.current.config.variant == "qemu-vtpm"
    assert watcher.current.built == "aa" * 32


def test_watcher_keeps_old_when_files_vanish(tmp_path: Path) -> None:
    write_mount(tmp_path, "1", good_files("aa" * 32))
    watcher = JoinConfigWatcher(tmp_path, Builds(), interval=1)
    (tmp_path / SALT_FILE).unlink()
    assert watcher.poll() is False
    assert watcher.current.built == "aa" * 32


def test_watcher_thread_picks_up_change(tmp_path: Path) -> None:
    import threading

    write_mount(tmp_path, "1", good_files("aa" * 32))
    changed = threading.Event()
    watcher = JoinConfigWatcher(
        tmp_path, Builds(), interval=0.05, on_change=lambda loaded: changed.set()
    )
    watcher.start()
    try:
        write_mount(tmp_path, "2", good_files("dd" * 32))
        assert changed.wait(10)
        assert watcher.current.built == "dd" * 32
    finally:
        watcher.stop()


def test_salt_from_a_separate_file(tmp_path: Path) -> None:
    mount = tmp_path / "join-config"
    mount.mkdir()
    files = good_files()
    del files[SALT_FILE]
    write_mount(mount, "1", files)
    salt_file = tmp_path / "salt"
    salt_file.write_bytes(SALT)
    watcher = JoinConfigWatcher(mount, Builds(), interval=1, salt_file=salt_file)
    assert watcher.current.config.measurement_salt == SALT
    salt_file.write_bytes(b"short")
    assert watcher.poll() is False
    assert watcher.current.config.measurement_salt == SALT
