"""The unit supervisor: restarts with backoff, counted and logged; giving up on a crash loop;
a restart on SIGHUP."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

from constellation.cli.mini.processes import is_running, stop
from constellation.cli.mini.supervision import read_status, spawn_unit, status_path

from .conftest import ChildPid, Until


def test_a_killed_service_is_restarted_counted_and_logged(
    mini_dir: Path, until: Until, child_pid: ChildPid, alive: Callable[[int], bool]
) -> None:
    log = mini_dir / "logs" / "sleeper.log"
    record = spawn_unit("sleeper", ["sleep", "300"], mini_dir=mini_dir, log_path=log)
    try:
        until(lambda: child_pid(mini_dir, "sleeper"), "the first start")
        first = child_pid(mini_dir, "sleeper")
        assert first is not None
        os.kill(first, signal.SIGKILL)
        until(lambda: child_pid(mini_dir, "sleeper") not in (None, first), "a restart")
        second = child_pid(mini_dir, "sleeper")
        assert second is not None
        assert alive(second)
        assert not alive(first)  # reaped, not a zombie
        status = read_status(mini_dir, "sleeper")
        assert status is not None
        assert status["restarts"] == {"sleeper": 1}
        assert status["state"] == "running"
        assert status["lastExit"] == "sleeper: signal SIGKILL"
        prom = status_path(mini_dir, "sleeper").with_suffix(".prom").read_text()
        assert 'constellation_mini_restarts_total{unit="sleeper",process="sleeper"} 1' in prom
        assert 'constellation_mini_unit_up{unit="sleeper"} 1' in prom
        events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        restart = next(e for e in events if e["event"] == "supervisor.restart")
        assert restart["status"] == "signal SIGKILL"
        assert restart["previous_pid"] == first
        assert restart["pid"] == second
    finally:
        stop(record)
    assert not is_running(record)
    assert not alive(second)  # stopping the supervisor ends its child
    assert (read_status(mini_dir, "sleeper") or {}).get("state") == "stopped"


def test_a_crash_loop_is_given_up_and_surfaces(mini_dir: Path, until: Until) -> None:
    log = mini_dir / "logs" / "crasher.log"
    record = spawn_unit("crasher", ["sh", "-c", "exit 3"], mini_dir=mini_dir, log_path=log)
    try:
        until(lambda: not is_running(record), "the supervisor to give up")
    finally:
        stop(record)
    status = read_status(mini_dir, "crasher")
    assert status is not None
    assert status["state"] == "failed"
    assert status["lastExit"] == "crasher: exit 3"
    assert '"event": "supervisor.gave_up"' in log.read_text()


def test_sighup_restarts_the_child_now(mini_dir: Path, until: Until, child_pid: ChildPid) -> None:
    log = mini_dir / "logs" / "hup.log"
    record = spawn_unit("hup", ["sleep", "300"], mini_dir=mini_dir, log_path=log)
    try:
        until(lambda: child_pid(mini_dir, "hup"), "the first start")
        first = child_pid(mini_dir, "hup")
        os.kill(record.pid, signal.SIGHUP)
        until(lambda: child_pid(mini_dir, "hup") not in (None, first), "a requested restart")
        assert (read_status(mini_dir, "hup") or {})["lastExit"] == "hup: restart requested"
    finally:
        stop(record)
