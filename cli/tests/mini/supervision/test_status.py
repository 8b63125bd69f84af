"""The supervision files as ``constellation status`` reads them: every unit, its counters
continued across supervisors, and nothing but units (a stray or torn file is skipped)."""

from __future__ import annotations

from pathlib import Path

from constellation.cli.commands.status import _count
from constellation.cli.mini.supervision import all_statuses
from constellation.cli.mini.supervision.status import SUPERVISION_DIR, UnitStatus


def test_every_unit_is_listed_with_its_counts(tmp_path: Path) -> None:
    service = UnitStatus.resume(tmp_path, "keyservice", "unit")
    service.count_restart("keyservice", "signal SIGKILL")
    service.save()
    node = UnitStatus.resume(tmp_path, "mini-worker-0/node", "node")
    node.reboots = 2
    node.save()
    # A second supervisor of the same unit continues the count.
    again = UnitStatus.resume(tmp_path, "keyservice", "unit")
    again.count_restart("keyservice", "exit 1")
    again.save()
    (tmp_path / SUPERVISION_DIR / "torn.json").write_text('{"unit": ')
    (tmp_path / SUPERVISION_DIR / "stray.json").write_text("[1, 2]")

    documents = {d["unit"]: d for d in all_statuses(tmp_path)}

    assert set(documents) == {"keyservice", "mini-worker-0/node"}
    assert _count(documents["keyservice"]["restarts"]) == 2
    assert documents["mini-worker-0/node"]["reboots"] == 2


def test_no_supervision_directory_is_no_units(tmp_path: Path) -> None:
    assert all_statuses(tmp_path) == []


def test_counts_of_the_wrong_type_count_as_zero() -> None:
    assert _count({"a": 1, "b": 2}) == 3
    assert _count(4) == 4
    assert _count(True) == 0
    assert _count("7") == 0
    assert _count({"a": "x", "b": False}) == 0
