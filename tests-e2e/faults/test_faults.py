"""Faults on a live mini cluster: each heals without intervention, and no join record is lost
or duplicated (issue 14). Tests run in file order on one cluster; every wait is bounded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from constellation.cli.mini.processes import MARKER_ENV, find_marked
from constellation.cli.testing import Completed

from .conftest import JOIN_TIMEOUT_S, FaultCluster, finish, wait_for

pytestmark = [pytest.mark.fault, pytest.mark.e2e, pytest.mark.slow, pytest.mark.swtpm]


def _add_node(cluster: FaultCluster, name: str, fault: object) -> None:
    """``mini node add`` with ``fault()`` injected while the node boots and joins; the node
    must join, adding exactly one disk binding and one node-name binding."""
    before = cluster.records()
    process = cluster.start(
        "mini", "node", "add", "--name", name, "--timeout", str(JOIN_TIMEOUT_S), "-o", "json"
    )
    try:
        if callable(fault):
            fault()
    finally:
        done = finish(process)
    assert done.code == 0, done.stderr[-3000:]
    assert done.json()["joined"] is True
    after = cluster.records()
    before.kept_in(after)
    assert after.nodes - before.nodes == {name}
    new_names = set(after.names) - set(before.names)
    assert len(new_names) == 1, new_names
    assert name in next(iter(new_names))
    assert len(set(after.disks) - set(before.disks)) == 1
    # One attestation buys one ticket: exactly one new bootstrap token for the one join.
    assert len(after.tokens - before.tokens) == 1, after.tokens - before.tokens


def test_keyservice_killed_during_a_join_is_restarted_and_the_join_succeeds(
    cluster: FaultCluster,
) -> None:
    before = cluster.restarts("keyservice", "keyservice")

    def fault() -> None:
        cluster.kill_child("keyservice", "keyservice")

    _add_node(cluster, "fault-keyservice", fault)
    assert cluster.restarts("keyservice", "keyservice") == before + 1


def test_joinservice_killed_while_a_node_waits_is_restarted_and_the_node_joins(
    cluster: FaultCluster,
) -> None:
    log = cluster.mini / "logs" / "fault-joinservice-bootstrapper.log"

    def fault() -> None:
        # Kill it once the node is waiting for it (its join client has started).
        wait_for(lambda: log.is_file() and "join" in log.read_text(), "the node to try joining")
        cluster.kill_child("joinservice", "joinservice")

    _add_node(cluster, "fault-joinservice", fault)
    assert cluster.restarts("joinservice", "joinservice") >= 1


def test_kube_apiserver_killed_during_a_join_is_restarted_by_the_bootstrapper(
    cluster: FaultCluster,
) -> None:
    def fault() -> None:
        pid = cluster.control_plane_pid("kube-apiserver")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: cluster.control_plane_pid("kube-apiserver") != pid, "a new API server")
        wait_for(lambda: not _zombie_or_alive(pid), "the dead API server to be reaped")

    _add_node(cluster, "fault-apiserver", fault)
    restarts = json.loads((cluster.control_plane_dir / "restarts.json").read_text())
    assert restarts["kube-apiserver"] >= 1


def test_etcd_restarted_keeps_every_record_and_joins_continue(cluster: FaultCluster) -> None:
    def fault() -> None:
        pid = cluster.control_plane_pid("etcd")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: cluster.control_plane_pid("etcd") != pid, "a new etcd")

    _add_node(cluster, "fault-etcd", fault)


def test_a_worker_whose_tpm_dies_reboots_and_rejoins_without_new_bindings(
    cluster: FaultCluster,
) -> None:
    unit = "mini-worker-0/node"
    before = cluster.records()
    reboots = int(cluster.status(unit).get("reboots", 0))
    log = cluster.mini / "logs" / "mini-worker-0-bootstrapper.log"
    offset = log.stat().st_size
    cluster.kill_child(unit, "swtpm")
    wait_for(lambda: int(cluster.status(unit).get("reboots", 0)) == reboots + 1, "a reboot")

    def rejoined() -> bool:
        with log.open("rb") as handle:
            handle.seek(offset)
            return b'"node.ready"' in handle.read()

    wait_for(rejoined, "the rebooted worker to rejoin")
    after = cluster.records()
    before.kept_in(after)
    # A rejoin confirms the bindings it has; it never creates one.
    assert after.disks == before.disks
    assert after.names == before.names
    # The rebooted node attests with fresh PCRs and a new event log: verify checks it anew
    # (its VerificationService was restarted with the node).
    verified = _verify_all(cluster)
    assert verified.code == 0, verified.stdout[-2000:] + verified.stderr[-2000:]


def _verify_all(cluster: FaultCluster) -> Completed:
    deadline = time.monotonic() + 60
    while True:
        result = cluster.run("verify", "--all", timeout=120)
        if result.code == 0 or time.monotonic() >= deadline:
            return result
        time.sleep(2)


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (whoever reaps it may not have yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _zombie_or_alive(pid: int) -> bool:
    try:
        os.stat(f"/proc/{pid}")
    except OSError:
        return False
    return True


CONTROL_PLANE_NODE = "mini-cp-0/node"
CONTROL_PLANE_CHILDREN = ("etcd", "kube-apiserver", "kube-controller-manager")


def _log_since(path: Path, offset: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read()


def test_the_control_plane_bootstrapper_killed_is_restarted_and_the_cluster_admits_a_join(
    cluster: FaultCluster,
) -> None:
    """Same boot (PCRs stay, the boot ID too): the restarted bootstrapper asks nobody for
    anything (the first control plane never joined, so the JoinService could not even answer
    a rejoin); it ends the stale control-plane children and starts them again from its files,
    logging ``node.same_boot_restart``; afterwards a worker joins."""
    pids = json.loads((cluster.control_plane_dir / "pids.json").read_text())
    restarts = cluster.restarts(CONTROL_PLANE_NODE, "bootstrapper")
    reboots = int(cluster.status(CONTROL_PLANE_NODE).get("reboots", 0))
    log = cluster.mini / "logs" / "mini-cp-0-bootstrapper.log"
    offset = log.stat().st_size
    cluster.kill_child(CONTROL_PLANE_NODE, "bootstrapper")
    wait_for(
        lambda: cluster.restarts(CONTROL_PLANE_NODE, "bootstrapper") == restarts + 1,
        "the control-plane bootstrapper to be restarted",
        timeout=30,
    )
    try:
        wait_for(lambda: b'"node.ready"' in _log_since(log, offset), "its restart", timeout=90)
    except AssertionError as timed_out:
        tail = _log_since(log, offset)[-3000:].decode(errors="replace")
        raise AssertionError(f"{timed_out}; its log since the kill:\n{tail}") from None
    assert int(cluster.status(CONTROL_PLANE_NODE).get("reboots", 0)) == reboots  # same boot
    since = _log_since(log, offset)
    assert b'"node.same_boot_restart"' in since
    assert b'"node.rejoin"' not in since  # no ticket asked for
    assert set(CONTROL_PLANE_CHILDREN[:2]) <= set(pids)  # the controller manager is optional
    for component, stale in pids.items():
        pid = cluster.control_plane_pid(component)
        assert pid != stale, f"{component} was not started again"
        assert _running(pid), f"{component} is not running"
        assert not _running(stale), f"the stale {component} still runs"
    _add_node(cluster, "fault-cp-bootstrapper", None)


def test_the_control_plane_tpm_killed_reboots_the_node_and_recover_brings_it_back(
    cluster: FaultCluster,
) -> None:
    """A reboot of the only control plane: its rejoin needs its own API server, which only the
    rejoin would start, so the node waits for ``constellation recover`` (a named state: the
    bootstrapper logs ``node.rejoin_failed`` with ``next=recovery`` and serves
    recoverproto.API; ``status`` shows the node's processes up). Recover resolves it."""
    before = cluster.records()
    reboots = int(cluster.status(CONTROL_PLANE_NODE).get("reboots", 0))
    log = cluster.mini / "logs" / "mini-cp-0-bootstrapper.log"
    offset = log.stat().st_size
    cluster.kill_child(CONTROL_PLANE_NODE, "swtpm")
    wait_for(
        lambda: int(cluster.status(CONTROL_PLANE_NODE).get("reboots", 0)) == reboots + 1,
        "the control-plane node to reboot",
        timeout=60,
    )

    def settled() -> bool:
        text = _log_since(log, offset)
        return b'"node.ready"' in text or b'"node.rejoin_failed"' in text

    wait_for(settled, "a rejoin or the wait for recovery", timeout=90)
    if b'"node.rejoin_failed"' in _log_since(log, offset):
        # The named state: the node serves recoverproto.API and waits for the master secret.
        assert b'"recovery"' in _log_since(log, offset)
        status = cluster.run("status", "-o", "json", timeout=60)
        assert status.code == 0, status.stderr[-2000:]
        assert "Traceback" not in status.stderr
        # The API server may still answer: control-plane children the previous bootstrapper
        # left are not this one's until recover restarts them from the node's files.
        rows = {row["name"]: row for row in status.json()["nodes"]}
        assert rows["mini-cp-0"]["processesRunning"] == {"swtpm": True, "bootstrapper": True}
        recovered = cluster.run("recover", "-o", "json", timeout=240)
        assert recovered.code == 0, recovered.stderr[-3000:]
        assert recovered.json()["recovered"] is True
    status = cluster.run("status", "-o", "json", timeout=60)
    assert status.code == 0, status.stderr[-2000:]
    assert status.json()["apiServer"]["reachable"] is True
    wait_for(lambda: b'"node.ready"' in _log_since(log, offset), "the node to be ready", 60)
    # The same etcd data: every record of the joins survived the reboot.
    before.kept_in(cluster.records())


def test_stop_ends_everything_even_a_process_started_by_hand(cluster: FaultCluster) -> None:
    """Last: ``mini stop`` finds what no record names (here a process started by hand in the
    workspace's ``mini/`` directory), supervisors first, and nothing comes back."""
    env = {k: v for k, v in os.environ.items() if k != MARKER_ENV}
    by_hand = subprocess.Popen(
        ["sleep", "300"], cwd=cluster.mini / "services", env=env, start_new_session=True
    )
    try:
        result = cluster.run("mini", "stop", "-o", "json")
        assert result.code == 0, result.stderr[-2000:]
        assert by_hand.wait(timeout=30) is not None
        time.sleep(1.0)  # a supervisor that survived would have restarted something by now
        assert find_marked(cluster.mini) == []
    finally:
        if by_hand.poll() is None:
            by_hand.kill()
            by_hand.wait(timeout=10)
