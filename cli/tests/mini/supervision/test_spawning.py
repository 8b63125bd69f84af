"""Spawned supervisors are marked for their workspace: ``down`` finds them (first), their
children and processes restarted by hand, and nothing of another workspace."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from constellation.cli.mini.processes import (
    MARKER_ENV,
    find_marked,
    is_running,
    spawn,
    stop,
    stop_marked,
)
from constellation.cli.mini.supervision import spawn_unit

from .conftest import ChildPid, Until


def test_down_finds_marked_and_hand_started_processes_but_not_other_workspaces(
    mini_dir: Path, until: Until, child_pid: ChildPid, alive: Callable[[int], bool]
) -> None:
    logs = mini_dir / "logs"
    supervised = spawn_unit("svc", ["sleep", "301"], mini_dir=mini_dir, log_path=logs / "svc.log")
    marked = spawn("marked", ["sleep", "302"], log_path=logs / "m.log", mini_dir=mini_dir)
    # Restarted by hand from the logged command line: no marker, but it names mini/.
    by_hand = subprocess.Popen(
        ["sh", "-c", "sleep 303", "x", f"--master-secret-file={mini_dir}/services/k"],
        start_new_session=True,
    )
    other_dir = Path(str(mini_dir) + "2")
    other = subprocess.Popen(
        ["sh", "-c", "sleep 304", "x", f"--file={other_dir}/services/k"],
        env={**os.environ, MARKER_ENV: str(other_dir)},
        start_new_session=True,
    )
    try:
        until(lambda: child_pid(mini_dir, "svc"), "the supervised child")
        child = child_pid(mini_dir, "svc")
        assert child is not None
        found = {p.pid for p in find_marked(mini_dir)}
        assert {supervised.pid, child, marked.pid, by_hand.pid} <= found
        assert other.pid not in found
        assert os.getpid() not in found
        supervisors = [p.pid for p in find_marked(mini_dir) if p.is_supervisor]
        assert supervisors == [supervised.pid]

        ended = stop_marked(mini_dir)
        assert len(ended) == 3  # the supervised child ended with its supervisor
        by_hand.wait(timeout=10)
        assert not is_running(supervised)
        assert not alive(child)
        assert not is_running(marked)
        assert find_marked(mini_dir) == []  # nothing was restarted meanwhile
        assert other.poll() is None  # another workspace's process is untouched
    finally:
        for process in (by_hand, other):
            process.kill()
            process.wait(timeout=10)
        stop(supervised)
        stop(marked)
