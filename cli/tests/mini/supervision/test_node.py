"""The node supervisor's reactions, with stand-in processes for the machine's parts: a
bootstrapper that exits with ``EXIT_REBOOT_REQUIRED`` gets the node rebooted (not restarted on
the same boot), bounded like restarts; any other exit is a restart on the same boot."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from constellation.bootstrapper.exitcodes import EXIT_REBOOT_REQUIRED
from constellation.cli.mini.supervision.machine import Launch
from constellation.cli.mini.supervision.node import NodeSupervisor
from constellation.cli.mini.supervision.policy import RestartPolicy

POLICY = RestartPolicy(initial_delay_s=0.05, max_delay_s=0.2, healthy_after_s=10.0,
                       max_quick_failures=3)  # fmt: skip
WAIT_S = 20.0
SLEEP = [sys.executable, "-c", "import time; time.sleep(300)"]


def _exits(code: int) -> list[str]:
    return [sys.executable, "-c", f"import sys; sys.exit({code})"]


class FakeMachine:
    """A machine whose TPM is a sleeping process and whose bootstrapper, on boot ``n``
    (counted by the firmware step), runs ``bootstrappers[n]`` (the last one thereafter)."""

    def __init__(self, bootstrappers: list[list[str]]) -> None:
        self.bootstrappers = bootstrappers
        self.boots = 0

    def tpm(self) -> Launch:
        return Launch(SLEEP)

    def tpm_answers(self) -> bool:
        return True

    def firmware(self) -> None:
        self.boots += 1

    def bootstrapper(self) -> Launch:
        return Launch(self.bootstrappers[min(self.boots, len(self.bootstrappers)) - 1])


class Running:
    """A node supervisor running in a thread, its log events captured."""

    def __init__(self, tmp_path: Path, machine: FakeMachine, logs: list[dict[str, Any]]) -> None:
        self.logs = logs
        mini = tmp_path / "mini"
        (mini / "logs").mkdir(parents=True)
        node_dir = mini / "nodes" / "node-0"
        node_dir.mkdir(parents=True)
        self.machine = machine
        self.supervisor = NodeSupervisor(
            "node-0/node", mini, POLICY, node_dir, mini / "logs", machine=machine
        )
        self.result: list[int] = []
        self.thread = threading.Thread(target=lambda: self.result.append(self.supervisor.run()))

    def until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.logs if e.get("event") == name]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Callable[[FakeMachine], Running]]:
    """``node(machine)``: a supervisor started on ``machine``; stopped (and joined) after."""
    started: list[Running] = []
    with capture_logs() as logs:

        def start(machine: FakeMachine) -> Running:
            running = Running(tmp_path, machine, logs)
            started.append(running)
            running.thread.start()
            return running

        try:
            yield start
        finally:
            for running in started:
                running.supervisor.stopping.set()
                running.thread.join(timeout=60)
                assert not running.thread.is_alive()


def test_a_bootstrapper_that_needs_a_reboot_gets_the_node_rebooted(
    node: Callable[[FakeMachine], Running],
) -> None:
    running = node(FakeMachine([_exits(EXIT_REBOOT_REQUIRED), SLEEP]))
    supervisor = running.supervisor
    running.until(lambda: supervisor.status.reboots == 1, "a reboot")
    running.until(lambda: supervisor.status.state == "running", "the rebooted node to run")
    assert running.machine.boots == 2  # measured again: a fresh boot, not a restart
    assert supervisor.status.restarts == {"bootstrapper": 1}
    assert supervisor.status.last_exit == f"bootstrapper: exit {EXIT_REBOOT_REQUIRED}"
    (reboot,) = running.events("supervisor.reboot")
    assert reboot["reason"].startswith(f"bootstrapper exit {EXIT_REBOOT_REQUIRED}")
    assert "reboot" in reboot["reason"]
    assert supervisor.bootstrapper is not None
    assert supervisor.bootstrapper.poll() is None  # the fresh bootstrapper runs


def test_a_node_that_asks_for_a_reboot_after_every_boot_is_given_up(
    node: Callable[[FakeMachine], Running],
) -> None:
    running = node(FakeMachine([_exits(EXIT_REBOOT_REQUIRED)]))
    running.until(lambda: bool(running.result), "the supervisor to give up")
    assert running.result == [1]
    assert running.supervisor.status.state == "failed"
    assert running.machine.boots == POLICY.max_quick_failures
    (gave_up,) = running.events("supervisor.gave_up")
    assert gave_up["process"] == "reboot"
    assert len(running.events("supervisor.reboot")) == POLICY.max_quick_failures


def test_any_other_exit_is_a_restart_on_the_same_boot(
    node: Callable[[FakeMachine], Running],
) -> None:
    running = node(FakeMachine([_exits(1)]))
    running.until(lambda: bool(running.result), "the supervisor to give up on the crash loop")
    assert running.result == [1]
    assert running.machine.boots == 1  # never rebooted: PCRs (the node lock) stay
    assert running.supervisor.status.reboots == 0
    assert running.events("supervisor.reboot") == []
    (gave_up,) = running.events("supervisor.gave_up")
    assert gave_up["process"] == "bootstrapper"
