"""The control plane after start-up: a dead child is reaped and started again, and counted."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from constellation.bootstrapper.kubernetes.components import ComponentLock, InstalledComponents
from constellation.bootstrapper.kubernetes.controlplane import (
    RESTARTS_FILE,
    ControlPlane,
    ControlPlaneBinaries,
    exit_status,
)
from constellation.bootstrapper.testing import processes_mentioning

RECOVERY_TIMEOUT_S = 60.0

pytestmark = [pytest.mark.kube, pytest.mark.slow]


def _state(pid: int) -> str | None:
    """The process state letter of ``pid`` (``Z`` for a zombie), None once it is reaped."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()[0]


def _wait_restarted(plane: ControlPlane, name: str, old_pid: int) -> int:
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while time.monotonic() < deadline:
        pid = plane.pids.get(name)
        if pid is not None and pid != old_pid and _state(old_pid) is None:
            return pid
        time.sleep(0.1)
    raise AssertionError(f"{name} (pid {old_pid}) was not reaped and restarted in time")


def _wait_serving(plane: ControlPlane) -> None:
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            plane.request("GET", "/api/v1/namespaces/kube-system/configmaps", timeout=2.0)
            return
        except OSError as err:
            last = err
            time.sleep(0.25)
    raise AssertionError(f"the API server did not serve again: {last}")


@pytest.fixture
def plane(
    tmp_path: Path, kubernetes_components: InstalledComponents, kubernetes_lock: ComponentLock
) -> ControlPlane:
    binaries = ControlPlaneBinaries.from_components(kubernetes_components)
    return ControlPlane(
        tmp_path / "cp",
        ControlPlaneBinaries(
            kubeadm=binaries.kubeadm, etcd=binaries.etcd, kube_apiserver=binaries.kube_apiserver
        ),
        kubernetes_version=kubernetes_lock.kubernetes_version,
        unsafe_no_fsync=True,
    )


def test_killed_children_are_reaped_restarted_and_counted(plane: ControlPlane) -> None:
    with plane:
        plane.request("POST", "/api/v1/namespaces/default/configmaps", _configmap("kept"))
        apiserver = plane.pids["kube-apiserver"]
        os.kill(apiserver, signal.SIGKILL)
        new_apiserver = _wait_restarted(plane, "kube-apiserver", apiserver)
        _wait_serving(plane)

        etcd = plane.pids["etcd"]
        os.kill(etcd, signal.SIGKILL)
        _wait_restarted(plane, "etcd", etcd)
        _wait_serving(plane)
        assert plane.pids["kube-apiserver"] == new_apiserver  # only the dead child restarts
        # Nothing written before the faults is lost.
        kept = plane.request("GET", "/api/v1/namespaces/default/configmaps/kept")
        assert kept["data"] == {"k": "v"}

        assert plane.restarts == {"kube-apiserver": 1, "etcd": 1}
        recorded = json.loads((plane.directory / RESTARTS_FILE).read_text())
        assert recorded == {"kube-apiserver": 1, "etcd": 1}
        log = (plane.log_dir / "kube-apiserver.log").read_text()
        assert log.count("--- start ") == 2
    assert processes_mentioning(str(plane.directory)) == []


def test_nothing_is_restarted_once_teardown_began(plane: ControlPlane) -> None:
    plane.start()
    try:
        os.kill(plane.pids["kube-apiserver"], signal.SIGKILL)
    finally:
        plane.stop()
    time.sleep(1.5)  # several watcher intervals and the first backoff
    assert processes_mentioning(str(plane.directory)) == []
    assert plane.restarts == {}


def test_exit_status_names_signals_and_codes() -> None:
    assert exit_status(-9) == "signal SIGKILL"
    assert exit_status(3) == "exit 3"
    assert exit_status(-200) == "signal 200"


def _configmap(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}}
