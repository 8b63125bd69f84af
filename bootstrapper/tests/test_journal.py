"""The journal: strict records with public values only, the lock taken under its mutex, and
the failpoint names checked once at start-up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from constellation.bootstrapper.journal import (
    FAILPOINT_ENV,
    FAILPOINTS,
    Journal,
    JournalError,
    JournalPath,
    JournalRecord,
    Step,
    failpoint_from_environment,
    journal_for,
    parse_journal,
)

UUID = "0b0e0c0d-1111-4222-8333-444455556666"
CLUSTER = b"c" * 32


def _document(**changes: object) -> bytes:
    document: dict[str, object] = {
        "version": 1,
        "step": "rekey",
        "path": "init",
        "diskUUID": UUID,
        "clusterID": "Y2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2M=",
    }
    document.update(changes)
    return json.dumps({k: v for k, v in document.items() if v != "<drop>"}).encode()


def test_a_record_round_trips(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.json")
    assert journal.read() is None
    record = JournalRecord(Step.REKEY, UUID, JournalPath.INIT, CLUSTER)
    journal.record(record)
    assert journal.read() == record
    assert (tmp_path / "journal.json").stat().st_mode & 0o777 == 0o600
    journal.clear()
    assert journal.read() is None
    journal.clear()  # idempotent


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "expected exactly the keys"),
        (_document(extra=1), "expected exactly the keys"),
        (_document(step="<drop>"), "expected exactly the keys"),
        (_document(version=2), "version: expected 1"),
        (_document(version=True), "version: expected 1"),
        (_document(step="teleport"), "'teleport' is not a valid Step"),
        (_document(path="both"), "'both' is not a valid JournalPath"),
        (_document(diskUUID="ABC"), "diskUUID"),
        (_document(diskUUID=7), "diskUUID: expected a string"),
        (_document(clusterID="***"), "clusterID: not valid base64"),
        (_document(clusterID=5), "clusterID: expected a base64 string"),
        (_document(clusterID="YWJj"), "clusterID: expected 32 bytes, got 3"),
        (_document(step="format"), "only to them"),  # a cluster ID before the lock
        (_document(path=None), "only to them"),  # a lock without its path
        (b" " * 5000, "larger than"),
    ],
)
def test_a_corrupt_record_is_a_typed_error_naming_the_field(data: bytes, message: str) -> None:
    with pytest.raises(JournalError, match=message):
        parse_journal(data)


def test_take_lock_keeps_the_previous_record_when_the_lock_was_lost(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.json")
    formatted = JournalRecord(Step.FORMAT, UUID)
    journal.record(formatted)
    taken = journal.take_lock(
        lambda _: False, path=JournalPath.JOIN, disk_uuid=UUID, cluster_id=CLUSTER
    )
    assert not taken
    assert journal.read() == formatted
    assert journal.take_lock(
        lambda _: True, path=JournalPath.INIT, disk_uuid=UUID, cluster_id=CLUSTER
    )
    assert journal.read() == JournalRecord(Step.LOCK, UUID, JournalPath.INIT, CLUSTER)


def test_one_journal_per_file_in_a_process(tmp_path: Path) -> None:
    state = tmp_path / "state" / "node-state.json"
    assert journal_for(state) is journal_for(state)
    assert journal_for(state).path == (tmp_path / "state" / "journal.json").absolute()


def test_failpoints_are_read_once_and_checked() -> None:
    assert failpoint_from_environment({}) is None
    assert failpoint_from_environment({FAILPOINT_ENV: "rekey.add"}) == "rekey.add"
    assert {"journal.lock", "lock", "rekey.add", "rekey.kill", "state"} <= FAILPOINTS
    with pytest.raises(JournalError, match="names no failpoint"):
        failpoint_from_environment({FAILPOINT_ENV: "rekey.half"})


def test_an_unarmed_crash_point_does_nothing(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.json", failpoint="state")
    journal.crash_point("lock")  # still alive
