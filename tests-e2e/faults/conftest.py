"""The fault suite's harness: one live mini cluster per module, and the faults it injects.

Faults are real: SIGKILL to the process a supervisor runs (a service, a node's swtpm) or to a
control-plane child of the first node's bootstrapper. Nothing is restarted by hand; recovery
is the supervisors' (:mod:`constellation.cli.mini.supervision`) and the control plane's own
(:mod:`constellation.bootstrapper.kubernetes.controlplane`).

After each fault the suite reads what the JoinService records in the API server
(:class:`JoinRecords`: disk bindings, node-name bindings, bootstrap tokens) and asserts that
nothing was lost or changed and that each new node added exactly one of each binding.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from constellation.cli.mini import clusterobjects
from constellation.cli.mini.supervision import read_status
from constellation.cli.testing import CLI, Completed, run_cli
from constellation.cli.testing import mini_cluster as up_mini_cluster
from constellation.joinservice.kubernetes import (
    BINDING_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    NODE_NAME_LABEL,
)

WAIT_S = 120.0
POLL_S = 0.25
JOIN_TIMEOUT_S = 150


@dataclass(frozen=True)
class JoinRecords:
    """What the JoinService recorded in the API server: bindings (name -> data) and tokens."""

    disks: dict[str, dict[str, str]]
    names: dict[str, dict[str, str]]
    tokens: frozenset[str]
    nodes: frozenset[str]

    def kept_in(self, later: JoinRecords) -> None:
        """Nothing of ``self`` was lost or changed in ``later``."""
        for name, data in self.disks.items():
            assert later.disks.get(name) == data, f"disk binding {name} lost or changed"
        for name, data in self.names.items():
            assert later.names.get(name) == data, f"node-name binding {name} lost or changed"
        assert self.nodes <= later.nodes, f"Node objects lost: {self.nodes - later.nodes}"


@dataclass
class FaultCluster:
    workspace: Path

    @property
    def mini(self) -> Path:
        return self.workspace / "mini"

    def run(self, *args: str, timeout: float = 300) -> Completed:
        return run_cli(self.workspace, *args, timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen[str]:
        """The CLI in the background (e.g. a join the fault should hit)."""
        return subprocess.Popen(
            [str(CLI), "-C", str(self.workspace), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def records(self) -> JoinRecords:
        core = clusterobjects.core_api(self.workspace / "constellation-admin.conf")
        try:
            maps = core.list_namespaced_config_map(
                "kube-system", label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY}"
            ).items
            secrets = core.list_namespaced_secret(
                "kube-system", field_selector="type=bootstrap.kubernetes.io/token"
            ).items
            nodes = core.list_node().items
        finally:
            core.api_client.close()
        labelled = {m.metadata.name: (m.metadata.labels or {}, dict(m.data or {})) for m in maps}
        return JoinRecords(
            disks={n: d for n, (labels, d) in labelled.items() if BINDING_LABEL in labels},
            names={n: d for n, (labels, d) in labelled.items() if NODE_NAME_LABEL in labels},
            tokens=frozenset(s.metadata.name for s in secrets),
            nodes=frozenset(n.metadata.name for n in nodes),
        )

    def status(self, unit: str) -> dict[str, Any]:
        return read_status(self.mini, unit) or {}

    def child_pid(self, unit: str, process: str) -> int:
        return int(self.status(unit)["children"][process]["pid"])

    def kill_child(self, unit: str, process: str) -> int:
        pid = self.child_pid(unit, process)
        os.kill(pid, signal.SIGKILL)
        return pid

    def control_plane_pid(self, component: str) -> int:
        return int(json.loads((self.control_plane_dir / "pids.json").read_text())[component])

    @property
    def control_plane_dir(self) -> Path:
        return self.mini / "nodes" / "mini-cp-0" / "state" / "control-plane"

    def restarts(self, unit: str, process: str) -> int:
        return int(self.status(unit).get("restarts", {}).get(process, 0))


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Bounded wait; every fault test waits only through this."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (OSError, KeyError, ValueError):
            pass
        time.sleep(POLL_S)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def finish(process: subprocess.Popen[str], timeout: float = JOIN_TIMEOUT_S + 60) -> Completed:
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    return Completed(process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultCluster]:
    with up_mini_cluster(tmp_path_factory.mktemp("fault-workspace"), workers=1) as up:
        yield FaultCluster(up.workspace)
