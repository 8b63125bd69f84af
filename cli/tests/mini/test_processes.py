"""Detached processes: recorded by PID + start time, stopped with their group, never a stranger."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from constellation.cli.mini.processes import (
    ProcessRecord,
    is_running,
    spawn,
    start_time_of,
    stop,
)

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
# A parent that starts a child in its own process group and ignores SIGTERM: only the group
# kill can end both.
STUBBORN = [
    sys.executable,
    "-c",
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(60)\n",
]


def _reap(pid: int) -> None:
    # Children of this test process become zombies until reaped.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_spawned_process_runs_detached_and_stops(tmp_path: Path) -> None:
    record = spawn("sleeper", SLEEPER, log_path=tmp_path / "logs" / "sleeper.log")
    try:
        assert is_running(record)
        assert os.getsid(record.pid) == record.pid  # its own session
        assert record.start_time == start_time_of(record.pid)
        assert stop(record, grace=5)
        _reap(record.pid)
        assert not is_running(record)
        assert not stop(record)  # idempotent
    finally:
        if is_running(record):
            os.kill(record.pid, signal.SIGKILL)


def test_a_reused_pid_is_never_signalled(tmp_path: Path) -> None:
    stranger = subprocess.Popen(SLEEPER)
    try:
        started = start_time_of(stranger.pid)
        assert started is not None
        # The record says "our process started at another time": the PID was reused.
        record = ProcessRecord("ours", stranger.pid, started + 1, str(tmp_path / "x.log"))
        assert not is_running(record)
        assert not stop(record, grace=1)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait(timeout=10)


def test_children_of_a_stubborn_process_are_ended_with_its_group(tmp_path: Path) -> None:
    log = tmp_path / "stubborn.log"
    record = spawn("stubborn", STUBBORN, log_path=log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not log.read_text().strip():
        time.sleep(0.05)
    child = int(log.read_text().split()[0])
    child_record = ProcessRecord("child", child, start_time_of(child) or 0, str(log))
    assert is_running(child_record)
    assert stop(record, grace=0.5)
    _reap(record.pid)
    assert not is_running(record)
    assert not is_running(child_record)


def test_a_recorded_pid_reused_by_someone_else_is_not_stopped(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        forged = ProcessRecord("x", sleeper.pid, 1, str(tmp_path / "log"))  # wrong start time
        assert stop(forged) is False
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)
