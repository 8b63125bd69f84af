"""The mini cluster record, the bounded join wait, and a teardown that removes only its own."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import pytest

from constellation.cli.mini.cluster import MiniRecord, down, wait_joined
from constellation.cli.mini.errors import ClusterStateError, JoinTimeoutError
from constellation.cli.mini.processes import is_running, spawn
from constellation.cli.workspace import CONFIG_FILE, STATE_FILE, Workspace


def test_record_round_trips(tmp_path: Path) -> None:
    record = MiniRecord(root=tmp_path, created_files=[STATE_FILE], image_version="mini-x")
    record.joinservice_port = 1234
    record.save()
    loaded = MiniRecord.load(Workspace(tmp_path))
    assert loaded.created_files == [STATE_FILE]
    assert loaded.image_version == "mini-x"
    assert loaded.joinservice_port == 1234


@pytest.mark.parametrize("content", [b"not json", b'{"version": 2}', b'{"version": 1}'])
def test_a_corrupt_record_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "mini").mkdir()
    (tmp_path / "mini" / "cluster.json").write_bytes(content)
    with pytest.raises(ClusterStateError):
        MiniRecord.load(Workspace(tmp_path))


def test_no_record_tells_to_run_mini_up(tmp_path: Path) -> None:
    with pytest.raises(ClusterStateError) as info:
        MiniRecord.load(Workspace(tmp_path))
    assert "mini up" in info.value.hint


def test_wait_joined_returns_once_every_node_registered() -> None:
    calls = iter([set(), {"a"}, {"a", "b"}])
    wait_joined(lambda: next(calls), {"a", "b"}, timeout=10)


def test_wait_joined_is_bounded() -> None:
    with pytest.raises(JoinTimeoutError, match="b did not join"):
        wait_joined(lambda: {"a"}, {"a", "b"}, timeout=0.2)


def test_wait_joined_stops_at_once_when_a_node_exited() -> None:
    with pytest.raises(JoinTimeoutError, match="stopped before joining"):
        wait_joined(lambda: set(), {"b"}, timeout=60, alive=lambda: ["b"])


def test_down_stops_recorded_processes_and_removes_only_created_files(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("the user's own configuration\n")
    (tmp_path / STATE_FILE).write_text("created by mini up\n")
    (tmp_path / "notes.txt").write_text("mine\n")
    record = MiniRecord(root=tmp_path, created_files=[STATE_FILE])
    sleeper = spawn(
        "sleeper",
        [sys.executable, "-c", "import time; time.sleep(60)"],
        log_path=record.logs_dir / "sleeper.log",
    )
    record.processes.append(sleeper)
    record.save()

    report = down(workspace)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(sleeper.pid, os.WNOHANG)
    assert report.stopped == ("sleeper",)
    assert not is_running(sleeper)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_FILE, "notes.txt"]
    assert down(workspace).stopped == ()  # idempotent


def test_record_documents_every_process(tmp_path: Path) -> None:
    record = MiniRecord(root=tmp_path)
    sleeper = spawn("s", [sys.executable, "-c", "pass"], log_path=tmp_path / "s.log")
    record.record_process(sleeper)
    saved = json.loads((tmp_path / "mini" / "cluster.json").read_text())
    assert saved["processes"][0]["pid"] == sleeper.pid
    assert saved["processes"][0]["startTime"] == sleeper.start_time


def test_a_late_joiner_without_a_verificationservice_is_found(tmp_path: Path) -> None:
    from constellation.attestation.identity import Role
    from constellation.cli.mini.cluster import nodes_missing_verification
    from constellation.cli.mini.node import MiniNode
    from constellation.cli.mini.processes import ProcessRecord, stop
    from constellation.cli.mini.services import VerificationEndpoint

    alive = spawn("sleeper", ["sleep", "300"], log_path=tmp_path / "s.log")
    dead = ProcessRecord("gone", 0, 0, str(tmp_path / "log"))
    try:

        def node(name: str, supervisor: ProcessRecord) -> MiniNode:
            return MiniNode(name, Role.WORKER, tmp_path / name, tmp_path, 1, "v", supervisor)

        record = MiniRecord(root=tmp_path)
        record.nodes = [node("served", alive), node("late", alive), node("off", dead)]
        record.nodes.append(node("stale", alive))
        record.verification = [
            VerificationEndpoint("served", 1, 2, alive),
            VerificationEndpoint("stale", 3, 4, dead),
        ]
        registered = {"served", "late", "off", "stale"}
        assert nodes_missing_verification(record, registered) == ["late", "stale"]
        assert nodes_missing_verification(record, {"served"}) == []
    finally:
        stop(alive)
