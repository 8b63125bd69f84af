"""Supervision in mini mode: restarts with backoff, counted and logged; giving up on a crash
loop; and finding (and stopping) whatever runs for a workspace, however it was started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from constellation.cli.mini.processes import (
    MARKER_ENV,
    ProcessRecord,
    find_marked,
    is_running,
    spawn,
    stop,
    stop_marked,
)
from constellation.cli.mini.supervisor import (
    POLICY_ENV,
    RestartPolicy,
    read_status,
    spawn_unit,
    status_path,
)

FAST = json.dumps({"initial_delay_s": 0.1, "healthy_after_s": 3.0, "max_quick_failures": 3})
WAIT_S = 20.0


@pytest.fixture
def mini_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(POLICY_ENV, FAST)
    directory = tmp_path / "ws" / "mini"
    (directory / "logs").mkdir(parents=True)
    return directory.resolve()


def _until(condition: object, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _child_pid(mini_dir: Path, unit: str) -> int | None:
    status = read_status(mini_dir, unit) or {}
    child = (status.get("children") or {}).get(unit.rsplit("/", 1)[-1])
    return int(child["pid"]) if child else None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_the_backoff_doubles_is_bounded_and_resets_after_a_healthy_run() -> None:
    policy = RestartPolicy(initial_delay_s=0.5, max_delay_s=4.0, healthy_after_s=30.0)
    assert policy.delay(None, 0.1) == 0.5
    assert policy.delay(0.5, 0.1) == 1.0
    assert policy.delay(4.0, 0.1) == 4.0
    assert policy.delay(4.0, 31.0) == 0.5


def test_a_killed_service_is_restarted_counted_and_logged(mini_dir: Path) -> None:
    log = mini_dir / "logs" / "sleeper.log"
    record = spawn_unit("sleeper", ["sleep", "300"], mini_dir=mini_dir, log_path=log)
    try:
        _until(lambda: _child_pid(mini_dir, "sleeper"), "the first start")
        first = _child_pid(mini_dir, "sleeper")
        assert first is not None
        os.kill(first, signal.SIGKILL)
        _until(lambda: _child_pid(mini_dir, "sleeper") not in (None, first), "a restart")
        second = _child_pid(mini_dir, "sleeper")
        assert second is not None
        assert _alive(second)
        assert not _alive(first)  # reaped, not a zombie
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
    assert not _alive(second)  # stopping the supervisor ends its child
    assert (read_status(mini_dir, "sleeper") or {}).get("state") == "stopped"


def test_a_crash_loop_is_given_up_and_surfaces(mini_dir: Path) -> None:
    log = mini_dir / "logs" / "crasher.log"
    record = spawn_unit("crasher", ["sh", "-c", "exit 3"], mini_dir=mini_dir, log_path=log)
    try:
        _until(lambda: not is_running(record), "the supervisor to give up")
    finally:
        stop(record)
    status = read_status(mini_dir, "crasher")
    assert status is not None
    assert status["state"] == "failed"
    assert status["lastExit"] == "crasher: exit 3"
    assert '"event": "supervisor.gave_up"' in log.read_text()


def test_sighup_restarts_the_child_now(mini_dir: Path) -> None:
    log = mini_dir / "logs" / "hup.log"
    record = spawn_unit("hup", ["sleep", "300"], mini_dir=mini_dir, log_path=log)
    try:
        _until(lambda: _child_pid(mini_dir, "hup"), "the first start")
        first = _child_pid(mini_dir, "hup")
        os.kill(record.pid, signal.SIGHUP)
        _until(lambda: _child_pid(mini_dir, "hup") not in (None, first), "a requested restart")
        assert (read_status(mini_dir, "hup") or {})["lastExit"] == "hup: restart requested"
    finally:
        stop(record)


def test_down_finds_marked_and_hand_started_processes_but_not_other_workspaces(
    mini_dir: Path, tmp_path: Path
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
        _until(lambda: _child_pid(mini_dir, "svc"), "the supervised child")
        child = _child_pid(mini_dir, "svc")
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
        assert not _alive(child)
        assert not is_running(marked)
        assert find_marked(mini_dir) == []  # nothing was restarted meanwhile
        assert other.poll() is None  # another workspace's process is untouched
    finally:
        for process in (by_hand, other):
            process.kill()
            process.wait(timeout=10)
        stop(supervised)
        stop(marked)


def test_a_recorded_pid_reused_by_someone_else_is_not_stopped(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        forged = ProcessRecord("x", sleeper.pid, 1, str(tmp_path / "log"))  # wrong start time
        assert stop(forged) is False
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)


def test_a_late_joiner_without_a_verificationservice_is_found(tmp_path: Path) -> None:
    from constellation.attestation.identity import Role
    from constellation.cli.mini.cluster import MiniRecord, nodes_missing_verification
    from constellation.cli.mini.node import MiniNode
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
