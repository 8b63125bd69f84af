"""What the supervision tests share: a workspace with a short restart policy, bounded waits,
and reading a supervised child's PID from its unit's status file."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from constellation.cli.mini.supervision import POLICY_ENV, read_status

FAST = json.dumps({"initial_delay_s": 0.1, "healthy_after_s": 3.0, "max_quick_failures": 3})
WAIT_S = 20.0

Until = Callable[[Callable[[], object], str], None]
ChildPid = Callable[[Path, str], "int | None"]


@pytest.fixture
def mini_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(POLICY_ENV, FAST)
    directory = tmp_path / "ws" / "mini"
    (directory / "logs").mkdir(parents=True)
    return directory.resolve()


@pytest.fixture
def until() -> Until:
    """``until(condition, what)``: poll ``condition`` for at most ``WAIT_S`` seconds."""

    def wait(condition: Callable[[], object], what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    return wait


@pytest.fixture
def child_pid() -> ChildPid:
    """``child_pid(mini_dir, unit)``: the PID the unit's supervisor last started, if any."""

    def pid(mini_dir: Path, unit: str) -> int | None:
        status = read_status(mini_dir, unit) or {}
        child = (status.get("children") or {}).get(unit.rsplit("/", 1)[-1])
        return int(child["pid"]) if child else None

    return pid


@pytest.fixture
def alive() -> Callable[[int], bool]:
    """``alive(pid)``: the process exists and is not a zombie (it was reaped)."""

    def check(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            return False
        return state not in ("Z", "X")

    return check
