"""Rejection reports from the JoinService's JSON decision log."""

from __future__ import annotations

import json
from pathlib import Path

from constellation.cli.mini.refusals import refusals_since


def _line(**fields: object) -> bytes:
    return json.dumps(fields).encode() + b"\n"


def test_only_refusals_after_the_offset_are_reported(tmp_path: Path) -> None:
    log = tmp_path / "joinservice.log"
    old = _line(event="join.refused", report="old", failures=[])
    log.write_bytes(old)
    failure = {"check": "pcr[9]", "expected": "aa", "actual": "bb", "enforced": True}
    log.write_bytes(
        old
        + b"not json\n"
        + _line(event="join.issued", node="w")
        + _line(
            event="join.refused", outcome="refused", report="pcr[9] differs", failures=[failure]
        )
        + _line(
            event="join.refused", outcome="refused", report="pcr[9] differs", failures=[failure]
        )
    )
    refusals = refusals_since(log, len(old))
    assert refusals == [
        {
            "outcome": "refused",
            "report": "pcr[9] differs",
            "failures": [{"check": "pcr[9]", "expected": "aa", "actual": "bb"}],
        }
    ]


def test_a_missing_log_has_no_refusals(tmp_path: Path) -> None:
    assert refusals_since(tmp_path / "absent.log", 0) == []
