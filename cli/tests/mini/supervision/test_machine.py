"""The mini machine's firmware step draws a new boot ID per boot, as the kernel does."""

from __future__ import annotations

from pathlib import Path

from constellation.bootstrapper.bootid import read_boot_id
from constellation.cli.mini.node import BOOT_ID_FILE, draw_boot_id


def test_every_boot_draws_a_new_id_the_bootstrapper_reads(tmp_path: Path) -> None:
    first = draw_boot_id(tmp_path)
    assert read_boot_id(tmp_path / BOOT_ID_FILE) == first
    second = draw_boot_id(tmp_path)  # a reboot
    assert second != first
    assert read_boot_id(tmp_path / BOOT_ID_FILE) == second
