"""``mini stop`` / ``mini start`` without a cluster: what they refuse and what they stop."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from constellation.cli.mini.cluster import MiniRecord, _end_control_plane_orphans, stop_cluster
from constellation.cli.mini.processes import ProcessRecord, is_running, spawn, stop
from constellation.cli.workspace import Workspace


def _sleeper(tmp_path: Path, name: str, *marker: str) -> ProcessRecord:
    return spawn(
        name, ["sh", "-c", "sleep 300", *marker], log_path=tmp_path / "logs" / f"{name}.log"
    )


def _gone(record: ProcessRecord) -> bool:
    deadline = time.monotonic() + 5
    while is_running(record) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not is_running(record)


def test_stop_without_a_cluster_is_a_clear_error(invoke: Any, tmp_path: Path) -> None:
    result = invoke(tmp_path, "mini", "stop")
    assert result.code == 1
    assert "mini up" in result.stderr
    assert "Traceback" not in result.stderr


def test_start_refuses_a_running_cluster(invoke: Any, tmp_path: Path) -> None:
    record = MiniRecord(root=tmp_path)
    process = _sleeper(tmp_path, "mini-cp-0/bootstrapper")
    try:
        record.record_process(process)
        result = invoke(tmp_path, "mini", "start")
        assert result.code == 1
        assert "mini stop" in result.stderr
        assert is_running(process)  # nothing was touched
    finally:
        stop(process)


def test_stop_ends_every_recorded_process_and_keeps_the_files(tmp_path: Path) -> None:
    record = MiniRecord(root=tmp_path)
    record.joinservice_running = True
    processes = [_sleeper(tmp_path, f"p{i}") for i in range(2)]
    try:
        for process in processes:
            record.record_process(process)
        stopped = stop_cluster(Workspace(tmp_path))
        assert set(stopped) == {"p0", "p1"}
        assert all(_gone(p) for p in processes)
        loaded = MiniRecord.load(Workspace(tmp_path))
        assert not loaded.joinservice_running
        assert [p.pid for p in loaded.processes] == [p.pid for p in processes]  # kept
        assert stop_cluster(Workspace(tmp_path)) == ()  # idempotent
    finally:
        for process in processes:
            stop(process)


def test_orphaned_control_plane_children_are_ended_only_if_they_name_the_directory(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "node" / "state" / "control-plane"
    directory.mkdir(parents=True)
    orphan = _sleeper(tmp_path, "etcd", str(directory.resolve()))
    stranger = _sleeper(tmp_path, "other", str(tmp_path / "elsewhere"))
    try:
        (directory / "pids.json").write_text(
            json.dumps({"etcd": orphan.pid, "kube-apiserver": stranger.pid, "bad": "x"})
        )
        assert _end_control_plane_orphans(directory) == ["etcd"]
        assert _gone(orphan)
        assert is_running(stranger)
    finally:
        stop(orphan)
        stop(stranger)


def test_no_pids_file_ends_nothing(tmp_path: Path) -> None:
    assert _end_control_plane_orphans(tmp_path) == []
